"""ramie.nn.recurrent: Recurrent cells and the RNN/Bidirectional wrappers.

The same objects as ``ramie.nn`` (and ``ramie``); this module mirrors the
layout of ``flax.nnx.nn`` so that ``nnx.nn.recurrent.X`` paths keep working.
"""

from ramie._src.nn.recurrent import GRUCell as GRUCell
from ramie._src.nn.recurrent import LSTMCell as LSTMCell
from ramie._src.nn.recurrent import OptimizedLSTMCell as OptimizedLSTMCell
from ramie._src.nn.recurrent import RNNCellBase as RNNCellBase
from ramie._src.nn.recurrent import SimpleCell as SimpleCell
from ramie._src.nn.recurrent import modified_orthogonal as modified_orthogonal
from ramie._src.nn.rnn import RNN as RNN
from ramie._src.nn.rnn import Bidirectional as Bidirectional
from ramie._src.nn.rnn import RNNBase as RNNBase
from ramie._src.nn.rnn import flip_sequences as flip_sequences
