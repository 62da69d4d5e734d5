"""ramie: stateful, eagerly initialised neural networks on JAX.

Write ``import ramie as nnx``: the NNX programming model (Modules that own
their Variables, the split/merge functional API, transforms that accept
modules) with a fast path for repeated calls.
"""

from ramie import errors as errors
from ramie._src.core.containers import Dict as Dict
from ramie._src.core.containers import List as List
from ramie._src.core.containers import Sequential as Sequential
from ramie._src.core.filters import All as All
from ramie._src.core.filters import Any as Any
from ramie._src.core.filters import Everything as Everything
from ramie._src.core.filters import Not as Not
from ramie._src.core.filters import Nothing as Nothing
from ramie._src.core.filters import OfType as OfType
from ramie._src.core.filters import PathContains as PathContains
from ramie._src.core.filters import WithTag as WithTag
from ramie._src.core.graph.api import PureState as PureState
from ramie._src.core.graph.api import call as call
from ramie._src.core.graph.api import clone as clone
from ramie._src.core.graph.api import find_duplicates as find_duplicates
from ramie._src.core.graph.api import flatten_graph as flatten
from ramie._src.core.graph.api import graphdef as graphdef
from ramie._src.core.graph.api import iter_children as iter_children
from ramie._src.core.graph.api import iter_graph as iter_graph
from ramie._src.core.graph.api import iter_module_children as iter_module_children
from ramie._src.core.graph.api import iter_modules as iter_modules
from ramie._src.core.graph.api import map as map
from ramie._src.core.graph.api import merge as merge
from ramie._src.core.graph.api import pop as pop
from ramie._src.core.graph.api import recursive_map as recursive_map
from ramie._src.core.graph.api import set_metadata as set_metadata
from ramie._src.core.graph.api import split as split
from ramie._src.core.graph.api import state as state
from ramie._src.core.graph.api import unflatten_graph as unflatten
from ramie._src.core.graph.api import unpack as unpack
from ramie._src.core.graph.api import update as update
from ramie._src.core.graph.api import variables as variables
from ramie._src.core.graph.defs import GraphDef as GraphDef
from ramie._src.core.module import Module as Module
from ramie._src.core.module import capture as capture
from ramie._src.core.module import view as view
from ramie._src.core.module import view_info as view_info
from ramie._src.core.module import with_attributes as with_attributes
from ramie._src.core.paths import format_path as format_path
from ramie._src.core.pytree import Object as Object
from ramie._src.core.pytree import Pytree as Pytree
from ramie._src.core.rng_ops import backup_keys as backup_keys
from ramie._src.core.rng_ops import fork_rngs as fork_rngs
from ramie._src.core.rng_ops import reseed as reseed
from ramie._src.core.rng_ops import restore_rngs as restore_rngs
from ramie._src.core.rng_ops import split_rngs as split_rngs
from ramie._src.core.rng_ops import with_rngs as with_rngs
from ramie._src.core.rngs import RngCount as RngCount
from ramie._src.core.rngs import RngKey as RngKey
from ramie._src.core.rngs import Rngs as Rngs
from ramie._src.core.rngs import RngState as RngState
from ramie._src.core.rngs import RngStream as RngStream
from ramie._src.core.state import FlatState as FlatState
from ramie._src.core.state import GraphState as GraphState
from ramie._src.core.state import State as State
from ramie._src.core.state import filter_state as filter_state
from ramie._src.core.state import from_flat_state as from_flat_state
from ramie._src.core.state import map_state as map_state
from ramie._src.core.state import merge_state as merge_state
from ramie._src.core.state import replace_by_pure_dict as replace_by_pure_dict
from ramie._src.core.state import restore_int_paths as restore_int_paths
from ramie._src.core.state import split_state as split_state
from ramie._src.core.state import to_flat_state as to_flat_state
from ramie._src.core.state import to_pure_dict as to_pure_dict
from ramie._src.core.variables import BatchStat as BatchStat
from ramie._src.core.variables import Cache as Cache
from ramie._src.core.variables import Intermediate as Intermediate
from ramie._src.core.variables import Intermediates as Intermediates
from ramie._src.core.variables import Param as Param
from ramie._src.core.variables import Perturbation as Perturbation
from ramie._src.core.variables import Variable as Variable
from ramie._src.core.variables import Variable as VariableState
from ramie._src.core.variables import VariableMetadata as VariableMetadata
from ramie._src.core.variables import as_pure as as_pure
from ramie._src.core.variables import pure as pure
from ramie._src.core.variables import register_variable_name as register_variable_name
from ramie._src.core.variables import variable_name_from_type as variable_name_from_type
from ramie._src.core.variables import variable_type_from_name as variable_type_from_name
from ramie._src.core.variables import with_metadata as with_metadata
from ramie._src.nn import initializers as initializers
from ramie._src.nn.linear import Linear as Linear
from ramie._src.nn.normalization import BatchNorm as BatchNorm
from ramie._src.nn.stochastic import Dropout as Dropout

__version__ = "0.1.0"
