"""`tiny-weighted`: an encoder that needs weights (a .npy projection matrix, or --random-init).

Registration imports nothing heavy: the model lives in `weighted_impl`, imported by `build` only, so
a test can tell whether a run built the encoder (a fully cached run must not).
"""
from asc_bench import hookimpl


def _build(request):
    from weighted_impl import build

    return build(request)


@hookimpl
def register_encoders(register):
    register("tiny-weighted", _build, requires_weights=True,
             description="logmel-stats projected by a weights matrix (test plugin)")
