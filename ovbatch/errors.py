"""The error tree. Every error ovbatch raises on purpose is an ``OvbatchError``.

The CLI turns these into one clear line on stderr and exit code 1; anything else is a bug.
"""


class OvbatchError(Exception):
    """Base class of every error ovbatch raises on purpose."""


class ConfigError(OvbatchError):
    """Raised when a setting (environment variable or option) is missing or malformed."""


class InputError(OvbatchError):
    """Raised when the user's input is wrong: a missing folder, a file that is not a model.

    Never retried: running it again gives the same answer.
    """


class NotAModelError(InputError):
    """Raised when a folder given to ``models import`` holds no model ovbatch can import."""


class CorruptModelError(InputError):
    """Raised when a model's files exist but OpenVINO or the importer cannot parse them."""


class AdapterMismatchError(InputError):
    """Raised when a LoRA adapter does not apply to its base model: no layer matches, or shapes differ."""


class StorageError(OvbatchError):
    """Raised when object storage cannot be reached or refuses an operation."""


class ObjectNotFound(StorageError):
    """Raised when a key does not exist in object storage."""


class ObjectExists(StorageError):
    """Raised when a create-only write finds the key already there."""


class TransientStorageError(StorageError):
    """Raised when storage still fails after its retries with an error that passes (throttling, HTTP 5xx,
    a reset connection, a timeout, EIO): the same operation, or the job, may succeed when run again."""

    retryable = True


class StorageFullError(StorageError):
    """Raised when a write finds no space left (ENOSPC) or the quota used up (EDQUOT): nothing partial is
    left behind, and running it again fails the same way until space is freed."""


class KeyringError(OvbatchError):
    """Raised when the keyring file is missing, unreadable, too open or malformed."""


class CryptoError(OvbatchError):
    """Base class of encryption failures."""


class IntegrityError(CryptoError):
    """Raised when ciphertext fails authentication: tampered, truncated, reordered or swapped."""


class UnknownKeyError(CryptoError):
    """Raised when a manifest names a key id the keyring does not hold."""


class WrongKeyError(CryptoError):
    """Raised when a wrapped data key does not open with the key the keyring holds for its id."""


class RegistryError(OvbatchError):
    """Base class of model registry errors."""


class ModelNotFound(RegistryError):
    """Raised when a model name or name@version is not in the registry."""


class VersionExists(RegistryError):
    """Raised when importing a version that already exists: versions are immutable."""


class DeviceError(OvbatchError):
    """Raised when an OpenVINO device is not available or a model cannot compile on it."""


class BadAudioError(InputError):
    """Raised when an audio file is empty, corrupt, not audio, too long or in a format nothing here decodes."""


class BadInputError(InputError):
    """Raised when a batch input cannot be used: a missing path, an empty glob, an unsafe or unreadable archive."""


class JobTimeLimitExceeded(OvbatchError):
    """Raised inside a job that ran past OVBATCH_JOB_TIME_LIMIT_S; the file fails, and may be retried."""


class JobCancelled(OvbatchError):
    """Raised inside a running job whose batch was cancelled; the file ends as cancelled."""


class WorkerStopping(OvbatchError):
    """Raised inside a running job when its worker is shutting down: the job goes back to its queue."""


class BadMessageError(InputError):
    """Raised when a job message fails validation: an unknown field, a wrong type, a value out of range."""


class WrongModelKindError(InputError):
    """Raised when a job names a registry model of a kind its job kind cannot run (a Whisper for txt2img)."""


class ModelRetired(RuntimeError):
    """Raised when a job reaches an engine the model cache has just evicted; running the job again reloads it."""


class ForgedMessageError(CryptoError):
    """Raised when a job message has no valid signature: missing, altered, expired or from an unknown key."""


class OutsideRootsError(InputError):
    """Raised when a job names an input or output outside the storage roots its worker allows."""


class StaleMessageError(OvbatchError):
    """Raised when a valid job message names a job its batch has no record of (expired, or lost with Redis)."""


class OutputTakenError(InputError):
    """Raised when a job's output name already holds another job's output (another model or options)."""
