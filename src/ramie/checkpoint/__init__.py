"""ramie.checkpoint: strict, durable, fast checkpoints of models and optimizers.

``save(path, model)`` and ``restore(path, model)`` are the two-line API;
``CheckpointManager`` keeps the last (or best) checkpoints of a training run;
``state_dict``/``load_state_dict`` and ``save_safetensors``/``load_safetensors``
exchange flat, named weights (with PyTorch names via ``convention="torch"``).
See ``docs/guides/checkpointing.md``.
"""

from ramie._src.checkpoint.api import CheckpointInfo as CheckpointInfo
from ramie._src.checkpoint.api import EntryInfo as EntryInfo
from ramie._src.checkpoint.api import info as info
from ramie._src.checkpoint.api import restore as restore
from ramie._src.checkpoint.api import save as save
from ramie._src.checkpoint.async_save import AsyncSave as AsyncSave
from ramie._src.checkpoint.async_save import (
    wait_until_finished as wait_until_finished,
)
from ramie._src.checkpoint.checks import LoadReport as LoadReport
from ramie._src.checkpoint.manager import CheckpointManager as CheckpointManager
from ramie._src.checkpoint.named import load_safetensors as load_safetensors
from ramie._src.checkpoint.named import load_state_dict as load_state_dict
from ramie._src.checkpoint.named import save_safetensors as save_safetensors
from ramie._src.checkpoint.named import state_dict as state_dict
