"""The known-harmless third-party warnings are silenced; our own and unknown ones still show."""
import warnings

from areal_mega.platform.quiet import silence_known_warnings


def _warn_from(module: str, message: str, category=UserWarning):
    exec(compile(f"import warnings\nwarnings.warn({message!r}, {category.__name__})", module, "exec"),
         {"__name__": module, "FutureWarning": FutureWarning, "UserWarning": UserWarning})


def test_known_megatron_warnings_are_silenced_and_others_are_not():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        silence_known_warnings()
        _warn_from("megatron.core.optimizer", "Transformer Engine and Apex are not installed. Falling back")
        _warn_from("torch.distributed.c10d_logger",
                   "`torch.distributed.all_gather_into_tensor` is deprecated. Use all_gather_single", FutureWarning)
        _warn_from("areal_mega.engine.engine", "Apex is not installed")  # ours: never silenced
        _warn_from("megatron.core.transformer", "something new")  # unknown: shows
    assert sorted(str(w.message) for w in seen) == ["Apex is not installed", "something new"]
