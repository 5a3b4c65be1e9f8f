"""`slow-logmel-stats`: logmel-stats that sleeps per batch, so a test can kill an extraction midway.

The sleep is read from SLOW_PLUGIN_SECONDS and is not part of config(): a resumed run without the
sleep uses the same cache key, as a user's rerun after a crash would.
"""
import os
import time

from asc_bench import hookimpl
from asc_bench_plugins.baselines.logmel_stats import LogMelStats


class SlowLogMelStats(LogMelStats):
    def forward(self, wave, lengths):
        time.sleep(float(os.environ.get("SLOW_PLUGIN_SECONDS", "0")))
        return super().forward(wave, lengths)


@hookimpl
def register_encoders(register):
    register("slow-logmel-stats", lambda request: SlowLogMelStats(), requires_weights=False)
