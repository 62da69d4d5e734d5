"""Flax's submodule names (``nnx.graph``, ``nnx.rnglib``, ``nnx.traversals``, ...).

Code written for Flax reaches some functions through these submodules
(``nnx.traversals.flatten_mapping``, ``nnx.graph.GraphDef``,
``from flax.nnx import rnglib``). Each is provided here as a small module of
re-exports, registered in ``sys.modules`` as ``ramie.<name>`` so that both
attribute access and ``import ramie.<name>`` work. They add no behaviour.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def _namespace(name: str, doc: str, members: dict[str, Any]) -> types.ModuleType:
    module = types.ModuleType(f"ramie.{name}", doc)
    module.__dict__.update(members)
    module.__all__ = sorted(members)  # type: ignore[attr-defined]
    sys.modules[f"ramie.{name}"] = module
    return module


def _build() -> dict[str, types.ModuleType]:
    from ramie._src.core import data as d
    from ramie._src.core import filters as f
    from ramie._src.core import modes, paths, rng_ops, rngs
    from ramie._src.core import state as st
    from ramie._src.core import traversals as tv
    from ramie._src.core import variables as v
    from ramie._src.core.containers import Dict, List, Sequential
    from ramie._src.core.graph import api as g
    from ramie._src.core.graph import context as ctx
    from ramie._src.core.graph.defs import GraphDef
    from ramie._src.core.module import Module, capture, view, view_info, with_attributes
    from ramie._src.core.pytree import Object, Pytree
    from ramie._src.core.tracing import current_trace
    from ramie._src.spmd import sharding as sh
    from ramie._src.training import optimizer as opt
    from ramie._src.training.train_state import TrainState
    from ramie._src.transforms import (
        autodiff,
        control_flow,
        general,
        jit,
        scan,
        shard_map,
        vmap,
    )
    from ramie._src.transforms.axes import Carry, DiffState, StateAxes, StateSharding

    graph_members = dict(
        split=g.split, merge=g.merge, update=g.update, state=g.state,
        variables=g.variables, graphdef=g.graphdef, clone=g.clone, pop=g.pop,
        iter_graph=g.iter_graph, iter_children=g.iter_children,
        iter_modules=g.iter_modules, find_duplicates=g.find_duplicates,
        recursive_map=g.recursive_map, map=g.map, set_metadata=g.set_metadata,
        call=g.call, unpack=g.unpack, flatten=g.flatten_graph,
        unflatten=g.unflatten_graph, GraphDef=GraphDef, Key=paths.Key,
        PathParts=paths.PathParts,
        GraphState=st.GraphState, PureState=g.PureState, ApplyCaller=g.ApplyCaller,
        SplitContext=ctx.SplitContext, MergeContext=ctx.MergeContext,
        UpdateContext=ctx.UpdateContext,
        split_context=ctx.split_context, merge_context=ctx.merge_context,
        update_context=ctx.update_context,
        current_update_context=ctx.current_update_context,
        to_tree=ctx.to_tree, from_tree=ctx.from_tree, NodeStates=ctx.NodeStates,
        prefix=ctx.prefix,
        set_graph_mode=modes.set_graph_mode, set_graph_updates=modes.set_graph_updates,
    )  # fmt: skip
    pytree_members = dict(
        Pytree=Pytree, Object=Object, data=d.data, static=d.static, Data=d.Data,
        Static=d.Static, dataclass=d.dataclass,
        register_data_type=d.register_data_type, is_data=d.is_data,
        has_data=d.has_data, check_pytree=d.check_pytree,
    )  # fmt: skip
    spaces = {
        "graph": _namespace(
            "graph", "Graph functional API (Flax's nnx.graph).", graph_members
        ),
        "graphlib": _namespace(
            "graphlib", "Graph functional API (Flax's nnx.graphlib).", graph_members
        ),
        "module": _namespace(
            "module",
            "Module and helpers (Flax's nnx.module).",
            dict(
                Module=Module,
                iter_modules=g.iter_modules,
                iter_children=g.iter_children,
                view=view,
                view_info=view_info,
                with_attributes=with_attributes,
                capture=capture,
            ),
        ),
        "object": _namespace(
            "object", "Graph object base classes (Flax's nnx.object).", pytree_members
        ),
        "pytreelib": _namespace(
            "pytreelib",
            "Graph object base classes (Flax's nnx.pytreelib).",
            pytree_members,
        ),
        "optimizer": _namespace(
            "optimizer",
            "Optimizer (Flax's nnx.optimizer).",
            dict(
                Optimizer=opt.Optimizer,
                ModelAndOptimizer=opt.ModelAndOptimizer,
                OptState=opt.OptState,
                OptArray=opt.OptArray,
                OptVariable=opt.OptVariable,
                to_opt_state=opt.to_opt_state,
            ),
        ),
        "rnglib": _namespace(
            "rnglib",
            "RNG streams (Flax's nnx.rnglib).",
            dict(
                Rngs=rngs.Rngs,
                RngStream=rngs.RngStream,
                RngState=rngs.RngState,
                RngKey=rngs.RngKey,
                RngCount=rngs.RngCount,
                split_rngs=rng_ops.split_rngs,
                fork_rngs=rng_ops.fork_rngs,
                reseed=rng_ops.reseed,
                backup_keys=rng_ops.backup_keys,
                restore_rngs=rng_ops.restore_rngs,
                with_rngs=rng_ops.with_rngs,
            ),
        ),
        "spmd": _namespace(
            "spmd",
            "Sharding helpers (Flax's nnx.spmd).",
            dict(
                with_partitioning=sh.with_partitioning,
                get_partition_spec=sh.get_partition_spec,
                get_named_sharding=sh.get_named_sharding,
                as_abstract=sh.as_abstract,
                abstract_with_sharding=sh.abstract_with_sharding,
                get_abstract_model=sh.get_abstract_model,
                logical_axis_rules=sh.logical_axis_rules,
                logical_to_mesh_axes=sh.logical_to_mesh_axes,
                add_axis=sh.add_axis,
                remove_axis=sh.remove_axis,
                get_var_pspec=sh.get_var_pspec,
                PARTITION_NAME=sh.PARTITION_NAME,
            ),
        ),
        "statelib": _namespace(
            "statelib",
            "State (Flax's nnx.statelib).",
            dict(
                State=st.State,
                FlatState=st.FlatState,
                GraphState=st.GraphState,
                merge_state=st.merge_state,
                split_state=st.split_state,
                filter_state=st.filter_state,
                map_state=st.map_state,
                to_flat_state=st.to_flat_state,
                from_flat_state=st.from_flat_state,
                to_pure_dict=st.to_pure_dict,
                replace_by_pure_dict=st.replace_by_pure_dict,
                restore_int_paths=st.restore_int_paths,
                diff=st.diff,
            ),
        ),
        "variablelib": _namespace(
            "variablelib",
            "Variables (Flax's nnx.variablelib).",
            dict(
                Variable=v.Variable,
                Param=v.Param,
                BatchStat=v.BatchStat,
                Cache=v.Cache,
                Intermediate=v.Intermediate,
                Perturbation=v.Perturbation,
                VariableState=v.Variable,
                VariableMetadata=v.VariableMetadata,
                with_metadata=v.with_metadata,
                variable_type_from_name=v.variable_type_from_name,
                variable_name_from_type=v.variable_name_from_type,
                register_variable_name=v.register_variable_name,
                var_defaults=modes.var_defaults,
            ),
        ),
        "filterlib": _namespace(
            "filterlib",
            "Filters (Flax's nnx.filterlib).",
            dict(
                to_predicate=f.to_predicate,
                filters_to_predicates=f.filters_to_predicates,
                OfType=f.OfType,
                PathContains=f.PathContains,
                PathIn=f.PathIn,
                WithTag=f.WithTag,
                All=f.All,
                Any=f.Any,
                Not=f.Not,
                Everything=f.Everything,
                Nothing=f.Nothing,
            ),
        ),
        "helpers": _namespace(
            "helpers",
            "Containers and TrainState (Flax's nnx.helpers).",
            dict(Sequential=Sequential, List=List, Dict=Dict, TrainState=TrainState),
        ),
        "traversals": _namespace(
            "traversals",
            tv.__doc__ or "",
            dict(
                flatten_mapping=tv.flatten_mapping,
                unflatten_mapping=tv.unflatten_mapping,
                flatten_to_sequence=tv.flatten_to_sequence,
                empty_node=tv.empty_node,
            ),
        ),
        "transforms": _namespace(
            "transforms",
            "Transforms (Flax's nnx.transforms).",
            dict(
                jit=jit.jit,
                jit_partial=jit.jit_partial,
                cached_partial=jit.cached_partial,
                grad=autodiff.grad,
                value_and_grad=autodiff.value_and_grad,
                vjp=autodiff.vjp,
                jvp=autodiff.jvp,
                custom_vjp=autodiff.custom_vjp,
                vmap=vmap.vmap,
                pmap=vmap.pmap,
                scan=scan.scan,
                cond=control_flow.cond,
                switch=control_flow.switch,
                fori_loop=control_flow.fori_loop,
                while_loop=control_flow.while_loop,
                eval_shape=general.eval_shape,
                remat=general.remat,
                checkify=general.checkify,
                make_jaxpr=general.make_jaxpr,
                shard_map=shard_map.shard_map,
                transform_metadata=general.transform_metadata,
                Carry=Carry,
                StateAxes=StateAxes,
                DiffState=DiffState,
                StateSharding=StateSharding,
            ),
        ),
        "extract": _namespace(
            "extract",
            "Pytree <-> graph conversion (Flax's nnx.extract).",
            dict(
                to_tree=ctx.to_tree, from_tree=ctx.from_tree, NodeStates=ctx.NodeStates
            ),
        ),
        "proxy_caller": _namespace(
            "proxy_caller",
            "Pure method calls (Flax's nnx.proxy_caller).",
            dict(ApplyCaller=g.ApplyCaller),
        ),
        "tracers": _namespace(
            "tracers",
            "JAX trace state (Flax's nnx.tracers).",
            dict(current_jax_trace=current_trace),
        ),
        "deprecations": _namespace(
            "deprecations",
            "ramie deprecates nothing Flax users rely on.",
            dict(deprecated=lambda new_fn: new_fn),
        ),
        "reprlib": _namespace(
            "reprlib", "Text reprs (Flax's nnx.reprlib).", _reprlib_members()
        ),
        "visualization": _namespace(
            "visualization",
            "Notebook display (Flax's nnx.visualization).",
            _visualization_members(),
        ),
    }
    compat_members = {
        **graph_members,
        **spaces["transforms"].__dict__,
        **spaces["rnglib"].__dict__,
    }
    compat_members = {
        k: val for k, val in compat_members.items() if not k.startswith("__")
    }
    compat_members["view"] = view
    compat_members["get_abstract_model"] = sh.get_abstract_model
    compat_members["view_info"] = view_info
    spaces["compat"] = _namespace(
        "compat",
        "Flax's graph-mode API (ramie always runs in graph mode).",
        compat_members,
    )
    return spaces


def _reprlib_members() -> dict[str, Any]:
    from ramie._src.display import repr as r

    return {
        "object_repr": r.object_repr,
        "state_repr": r.state_repr,
        "repr_options": r.repr_options,
    }


def _visualization_members() -> dict[str, Any]:
    from ramie._src.display.treescope import display

    return {"display": display}


_SPACES = _build()
globals().update(_SPACES)
