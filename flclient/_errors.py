"""The exception family of :mod:`flclient`.

Every error the SDK raises for a runtime condition (bad module, sandbox violation, bad input data)
is a subclass of :class:`FLClientError`; programmer misuse still raises ``TypeError``/``ValueError``.
Errors from libraries below (wasmtime, cryptography, numpy) are translated where they enter::

    FLClientError
    ├── FeatureError                      a feature module could not be used (has .module)
    │   ├── FeatureModuleInvalid          not a valid ABI v1 module
    │   │   ├── FeatureManifestError      manifest missing, malformed, or disagreeing with the code
    │   │   ├── FeatureAbiMismatch        the module speaks another ABI version
    │   │   ├── FeatureExportError        an export is missing or has the wrong type
    │   │   └── FeatureImportError        the module imports something outside the allow-list
    │   ├── FeatureIntegrityError         sha256 or signature does not match
    │   ├── FeatureInputError             input columns missing, of the wrong shape, or not convertible
    │   └── FeatureSandboxError           the module misbehaved while running (instance is rebuilt)
    │       ├── FeatureTrap               it trapped (unreachable, out-of-bounds access, ...)
    │       ├── FeatureOutOfFuel          it used more than its instruction budget
    │       ├── FeatureTimeout            it ran past its wall-clock deadline
    │       └── FeatureMemoryExhausted    it needed more memory than its limit
    ├── UpdateError                       a model update could not be built, encoded, decoded or accounted
    │   ├── UpdateInputError              the update itself is unusable (non-finite values, out of a codec's range)
    │   ├── UpdateCodecError              an encoded payload is truncated, corrupted, oversized or of unknown format
    │   └── PrivacyError                  the device's privacy accounting refuses or cannot proceed
    │       ├── PrivacyBudgetExhausted    this round would exceed the configured (epsilon, delta) budget
    │       └── PrivacyLedgerError        the ledger database cannot be opened, read or written
    │           └── PrivacyLedgerClosed   the ledger was used after close() (also a ResourceClosedError)
    ├── FleetError                        talking to the coordinator (Flower's Fleet API) failed
    │   ├── FleetUnavailable              network error, timeout or 5xx/429 after the retries ran out
    │   ├── FleetAuthError                401: the SuperLink refused the node's signature or identity
    │   ├── FleetNodeNotRegistered        SuperLink registers keys only by its operator and not this one: stop
    │   ├── FleetRunNotRunning            403: the run is not running (finished, stopped): a stop signal
    │   ├── FleetProtocolError            an answer that is not what the protocol says (content type, protobuf)
    │   └── ObjectIntegrityError          a pulled object is malformed, oversized or not what its id says
    ├── StateStoreError                   the device's SQLite state store cannot be opened or is corrupt
    ├── ExampleStoreError                 the on-device example store cannot be opened, written or read (a corrupt row)
    ├── ResourceClosedError               an object was used after close() (also a ValueError: a programming mistake)
    ├── TaskDeclined                      the device refused a task, with a reason (has .reason)
    ├── ProtocolError                     a task or reply breaks the typed round contract (has .key)
    ├── DeviceConfigError                 a device configuration (device.toml) is wrong (one sentence)
    ├── RunConfigError                    a ServerApp run-config key is unknown or its value wrong (has .key)
    ├── GateError                         the participation gate could not be used
    │   ├── PolicyError                   an eligibility policy or device profile is invalid (has .source)
    │   └── RoundAbandoned                a may-continue check failed mid-round (has .reasons); nothing was sent
    ├── SecAggError                       secure aggregation (SecAgg+) could not proceed (has .reason)
    │   ├── SecAggAborted                 the coordinator aborted the round, e.g. fewer than t devices survived
    │   ├── SecAggProtocolError           a message is malformed, forged, replayed or inconsistent
    │   ├── SecAggStateError              the device's persisted protocol state forbids the step: it drops out
    │   └── SecAggIncompatible            a setting cannot be combined with SecAgg (a non-linear codec, ...)
    ├── ArtifactError                     a trusted artifact could not be fetched, verified or cached (.artifact)
    │   ├── ArtifactNotFound              no trusted target has that name and version (in the role it belongs to)
    │   ├── ArtifactPinMismatch           the trusted target's sha256 is not the one the task pinned
    │   ├── ArtifactTampered              downloaded bytes differ from the trusted length or hashes
    │   ├── ArtifactTooLarge              a response ran past its trusted or configured length (endless data)
    │   ├── ArtifactUnavailable           the repository could not be reached (network, HTTP status, deadline)
    │   ├── ArtifactCacheError            the local artifact cache cannot be used (I/O, size cap)
    │   ├── ArtifactPublishError          a repository cannot be created or updated (key, threshold, reused version)
    │   └── MetadataError                 TUF metadata was refused; nothing new is trusted, cached artifacts stay
    │       ├── MetadataExpired           freeze: the newest metadata offered is past its expiry date
    │       ├── MetadataRollback          a metadata version older than one the device already trusts
    │       ├── MetadataMismatch          mix-and-match: metadata disagrees with what snapshot/timestamp recorded
    │       └── MetadataUntrusted         not signed by a threshold of its role's keys (wrong role, forged)
    ├── SignedArtifactError               a signed model checkpoint or device update cannot be trusted
    │   ├── CheckpointError               a checkpoint is malformed or not signed by a trusted server key
    │   └── UpdateSignatureError          a device update's signature is malformed, for another round, or untrusted
    └── TlsError                          TLS could not be set up, or the peer failed verification (fails closed)
        ├── TlsConfigError                a CA bundle, client certificate or key cannot be loaded
        └── TlsVerificationFailed         the server's certificate does not chain to the pinned CA or name
"""

from __future__ import annotations

__all__ = [
    "ArtifactCacheError",
    "ArtifactError",
    "ArtifactNotFound",
    "ArtifactPinMismatch",
    "ArtifactPublishError",
    "ArtifactTampered",
    "ArtifactTooLarge",
    "ArtifactUnavailable",
    "CheckpointError",
    "DeviceConfigError",
    "ExampleStoreError",
    "FLClientError",
    "FeatureAbiMismatch",
    "FeatureError",
    "FeatureExportError",
    "FeatureImportError",
    "FeatureInputError",
    "FeatureIntegrityError",
    "FeatureManifestError",
    "FeatureMemoryExhausted",
    "FeatureModuleInvalid",
    "FeatureOutOfFuel",
    "FeatureSandboxError",
    "FeatureTimeout",
    "FeatureTrap",
    "FleetAuthError",
    "FleetError",
    "FleetNodeNotRegistered",
    "FleetProtocolError",
    "FleetRunNotRunning",
    "FleetUnavailable",
    "GateError",
    "MetadataError",
    "MetadataExpired",
    "MetadataMismatch",
    "MetadataRollback",
    "MetadataUntrusted",
    "ObjectIntegrityError",
    "PolicyError",
    "PrivacyBudgetExhausted",
    "PrivacyError",
    "PrivacyLedgerClosed",
    "PrivacyLedgerError",
    "ProtocolError",
    "ResourceClosedError",
    "RoundAbandoned",
    "RunConfigError",
    "SecAggAborted",
    "SecAggError",
    "SecAggIncompatible",
    "SecAggProtocolError",
    "SecAggStateError",
    "SignedArtifactError",
    "StateStoreError",
    "TaskDeclined",
    "TlsConfigError",
    "TlsError",
    "TlsVerificationFailed",
    "UpdateCodecError",
    "UpdateError",
    "UpdateInputError",
    "UpdateSignatureError",
]


class FLClientError(Exception):
    """Root of every runtime error raised by flclient."""


class FeatureError(FLClientError):
    """A feature module could not be loaded or run.

    ``module`` names the module (its manifest name, or the file when the name is not known yet) and
    ``reason`` says what went wrong; ``str(err)`` combines both.
    """

    def __init__(self, module: str, reason: str) -> None:
        super().__init__(f"feature module {module!r}: {reason}")
        self.module = module
        self.reason = reason


class FeatureModuleInvalid(FeatureError):
    """The bytes are not a valid feature module of a supported ABI."""


class FeatureManifestError(FeatureModuleInvalid):
    """The manifest is missing, malformed, or disagrees with what the module's code declares."""


class FeatureAbiMismatch(FeatureModuleInvalid):
    """The module speaks an ABI version this host does not."""


class FeatureExportError(FeatureModuleInvalid):
    """A required export is missing or has the wrong type."""


class FeatureImportError(FeatureModuleInvalid):
    """The module imports something outside the allow-list (ABI v1 allows no imports)."""


class FeatureIntegrityError(FeatureError):
    """The module's sha256 or signature does not match what was expected."""


class FeatureInputError(FeatureError):
    """Input columns are missing, mis-shaped, or cannot be converted to the manifest's dtypes."""


class FeatureSandboxError(FeatureError):
    """The module misbehaved while running; its instance is discarded and rebuilt before the next call."""


class FeatureTrap(FeatureSandboxError):
    """The module trapped (unreachable, out-of-bounds memory access, stack overflow, ...)."""


class FeatureOutOfFuel(FeatureSandboxError):
    """The module used more than its instruction (fuel) budget."""


class FeatureTimeout(FeatureSandboxError):
    """The module ran past its wall-clock (epoch) deadline."""


class FeatureMemoryExhausted(FeatureSandboxError):
    """The module needed more linear memory than its limit allows."""


class GateError(FLClientError):
    """The participation gate could not be used (a missing optional dependency, a bad simulation request)."""


class PolicyError(GateError):
    """An eligibility policy or device profile file is invalid; ``source`` names the file, ``str(err)`` says why."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class RoundAbandoned(GateError):
    """A may-continue check failed during a round: the round stopped before anything was uploaded.

    ``reasons`` holds the coarse reason codes (strings such as ``"power"`` or ``"thermal"``).
    """

    def __init__(self, reasons: tuple[str, ...]) -> None:
        super().__init__(f"round abandoned: {', '.join(reasons) or 'unknown'}")
        self.reasons = reasons


class FleetError(FLClientError):
    """Talking to the coordinator over Flower's Fleet API failed."""


class FleetUnavailable(FleetError):
    """The SuperLink could not be reached (network error, timeout, 5xx or 429) within the retry budget."""


class FleetAuthError(FleetError):
    """The SuperLink answered 401: it refused the request signature or the node's identity."""


class FleetNodeNotRegistered(FleetError):
    """The SuperLink runs with node authentication and this device's key is not registered with it.

    Nothing the device does fixes this: the operator registers its public key (``flclient node-key export``,
    then ``flwr supernode register``). The node loop stops instead of retrying.
    """


class FleetRunNotRunning(FleetError):
    """The SuperLink answered 403: the run is not running any more (finished or stopped)."""


class FleetProtocolError(FleetError):
    """An answer that breaks the protocol: wrong content type, undecodable protobuf, unexpected status."""


class ObjectIntegrityError(FleetError):
    """A pulled object is malformed, larger than allowed, or its content does not hash to its id."""


class StateStoreError(FLClientError):
    """The device's durable state (SQLite) cannot be opened, is of another schema, or is corrupt."""


class ExampleStoreError(FLClientError):
    """The on-device example store (:class:`~flclient.ExampleStore`) cannot be opened, written or read: the file is
    not an example store, appended records do not fit their collection's columns, or a stored row is corrupt."""


class ResourceClosedError(FLClientError, ValueError):
    """An object that holds a native resource (wasm store, SQLite file, HTTP connection pool) was used after
    ``close()``. Like a closed file's, it is also a ``ValueError``: the caller's mistake, not the device's state."""


class TaskDeclined(FLClientError):
    """The device refused a task it cannot run as asked; ``reason`` is a short machine-readable cause (a
    :class:`flclient.protocol.Code`), ``reasons`` the participation gate's coarse reasons for ``not-eligible``."""

    def __init__(self, reason: str, detail: str, *, reasons: tuple[str, ...] = ()) -> None:
        super().__init__(f"task declined ({reason}): {detail}")
        self.reason = reason
        self.detail = detail
        self.reasons = reasons


class ProtocolError(FLClientError):
    """A task or a reply does not fit the round's typed contract (:mod:`flclient.protocol`); ``key`` names the
    offending record or config key. A device declines such a task as ``bad-config``; a server drops such a reply."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.detail = message


class DeviceConfigError(FLClientError):
    """A device configuration value is missing or wrong; the message names the key and what is expected."""


class RunConfigError(FLClientError, ValueError):
    """The ServerApp's run config has an unknown key, a value that cannot be used, or keys that conflict.

    ``key`` names the run-config key at fault; ``str(err)`` says what is wrong with it and what is allowed. It
    is raised before the first round. It is also a ``ValueError``: the run config is the caller's input.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"run config {key!r}: {problem}")
        self.key = key
        self.problem = problem


class UpdateError(FLClientError):
    """A model update could not be built, encoded, decoded or accounted for."""


class UpdateInputError(UpdateError):
    """The update is unusable as given: non-finite values, or values outside what the chosen codec can carry."""


class UpdateCodecError(UpdateError):
    """An encoded payload is truncated, corrupted, larger than allowed, or of an unknown codec or version."""


class PrivacyError(UpdateError):
    """The device's privacy accounting refused the round or could not be used."""


class PrivacyBudgetExhausted(PrivacyError):
    """Participating in this round would take the device past its configured (epsilon, delta) budget.

    ``epsilon_spent`` is what the ledger holds now, ``epsilon_after`` what it would hold after the round,
    and ``budget`` the configured limit.
    """

    def __init__(self, *, epsilon_spent: float, epsilon_after: float, budget: float) -> None:
        super().__init__(
            f"privacy budget exhausted: epsilon would reach {epsilon_after:.4g} (spent {epsilon_spent:.4g}) "
            f"but the budget is {budget:.4g}"
        )
        self.epsilon_spent = epsilon_spent
        self.epsilon_after = epsilon_after
        self.budget = budget


class PrivacyLedgerError(PrivacyError):
    """The privacy ledger database cannot be opened, read or written."""


class PrivacyLedgerClosed(PrivacyLedgerError, ResourceClosedError):
    """The privacy ledger was used after ``close()``: a :class:`PrivacyLedgerError` as before, and the one
    :class:`ResourceClosedError` every closed resource raises."""


class SecAggError(FLClientError):
    """Secure aggregation could not proceed; ``reason`` says why in one sentence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SecAggAborted(SecAggError):
    """The coordinator aborted the round (too few survivors, a secret that cannot be reconstructed)."""


class SecAggProtocolError(SecAggError):
    """A SecAgg message is malformed, carries a wrong signature, is replayed, or contradicts an earlier one."""


class SecAggStateError(SecAggError):
    """The device's persisted protocol state forbids the requested step; the device drops out of the round."""


class SecAggIncompatible(SecAggError):
    """A setting cannot be combined with secure aggregation (a non-linear compression codec, ...)."""


class ArtifactError(FLClientError):
    """A trusted artifact (feature module, model checkpoint) could not be fetched, verified or cached.

    ``artifact`` names it (its TUF target path, or the metadata role that failed) and ``reason`` says what went
    wrong. Whatever the cause, artifacts verified earlier stay in the cache and remain usable.
    """

    def __init__(self, artifact: str, reason: str) -> None:
        super().__init__(f"{artifact}: {reason}")
        self.artifact = artifact
        self.reason = reason


class ArtifactNotFound(ArtifactError):
    """No trusted target has that name and version in the role it belongs to."""


class ArtifactPinMismatch(ArtifactError):
    """The repository's trusted target has another sha256 than the one the task pinned: nothing was installed."""


class ArtifactTampered(ArtifactError):
    """Downloaded bytes differ from the length or hashes the signed metadata promised."""


class ArtifactTooLarge(ArtifactError):
    """A response ran past the length the metadata (or the configuration) allows: an endless-data attack."""


class ArtifactUnavailable(ArtifactError):
    """The repository could not be reached, answered with an HTTP error, or ran past the download deadline."""


class ArtifactCacheError(ArtifactError):
    """The local artifact cache cannot be read or written, or an artifact is larger than its size cap."""


class ArtifactPublishError(ArtifactError):
    """A TUF repository cannot be created or updated: a key is missing, a threshold is not met, a version reused."""


class MetadataError(ArtifactError):
    """TUF metadata was refused: nothing new is trusted and the cached artifacts stay as they were."""


class MetadataExpired(MetadataError):
    """Freeze attack (or a repository nobody re-signed): the newest metadata offered is past its expiry date."""


class MetadataRollback(MetadataError):
    """Rollback attack: the repository offered a metadata version older than one the device already trusts."""


class MetadataMismatch(MetadataError):
    """Mix-and-match attack: a metadata file disagrees with the version or hashes its parent recorded."""


class MetadataUntrusted(MetadataError):
    """Metadata is not signed by a threshold of its role's keys: forged, or signed by the wrong role."""


class SignedArtifactError(FLClientError):
    """A signed model checkpoint or device update cannot be trusted."""


class CheckpointError(SignedArtifactError):
    """A model checkpoint is malformed, or not signed by a trusted server key for this model version."""


class UpdateSignatureError(SignedArtifactError):
    """A device update's signature is malformed, was made for another round or payload, or its key is untrusted."""


class TlsError(FLClientError):
    """TLS could not be set up, or the peer failed verification; the connection is never made without it."""


class TlsConfigError(TlsError):
    """A CA bundle, client certificate or private key file cannot be loaded."""


class TlsVerificationFailed(TlsError):
    """The server's certificate does not chain to the pinned CA, or does not name the host."""
