import os

from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=40, deadline=None)
# CI explores more examples, derandomized so that a run is reproducible (new examples are found locally).
settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
