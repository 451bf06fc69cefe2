"""The update pipeline: delta -> L2 clip -> differential-privacy noise -> encode, and the privacy ledger.

Codecs share one interface (:class:`UpdateCodec`) and one self-describing payload header; the server decodes
any payload with :func:`decode_vector` or a whole upload with :func:`decode_update`.
"""

from ._accounting import rdp_epsilon
from ._clip import ClipConfig, ClipReport, clip_update
from ._codecs import (
    BlockInt8Codec,
    Float16Codec,
    LosslessFloat32Codec,
    RotatedCodec,
    TopKCodec,
    UpdateCodec,
    decode_vector,
)
from ._ledger import BudgetDecision, LedgerEntry, PrivacyBudget, PrivacyLedger
from ._pipeline import (
    ClipStage,
    EncodedUpdate,
    EncodeStage,
    ErrorFeedback,
    InMemoryResidualStore,
    PrivacyConfig,
    PrivacyStage,
    ResidualStore,
    SqliteResidualStore,
    UpdateDraft,
    UpdatePipeline,
    UpdateStage,
    compute_delta,
    decode_update,
    secure_generator,
)
from ._server_accounting import central_epsilon

__all__ = [
    "BlockInt8Codec",
    "BudgetDecision",
    "ClipConfig",
    "ClipReport",
    "ClipStage",
    "EncodeStage",
    "EncodedUpdate",
    "ErrorFeedback",
    "Float16Codec",
    "InMemoryResidualStore",
    "LedgerEntry",
    "LosslessFloat32Codec",
    "PrivacyBudget",
    "PrivacyConfig",
    "PrivacyLedger",
    "PrivacyStage",
    "ResidualStore",
    "RotatedCodec",
    "SqliteResidualStore",
    "TopKCodec",
    "UpdateCodec",
    "UpdateDraft",
    "UpdatePipeline",
    "UpdateStage",
    "central_epsilon",
    "clip_update",
    "compute_delta",
    "decode_update",
    "decode_vector",
    "rdp_epsilon",
    "secure_generator",
]
