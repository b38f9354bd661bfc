"""Test set-up: 8 emulated CPU devices, a persistent compilation cache, parsed absl flags.

The environment is set before jax is imported anywhere, and subprocesses started by tests
inherit it (so they also see 8 devices and share the cache).
"""
import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('FERJAX_CACHE_DIR', os.path.join(os.path.expanduser('~'), '.cache',
                                                       'ferjax', 'test_jax_cache'))

from absl import flags  # noqa: E402

# grain's worker processes read absl flags once jax is imported: they must be parsed.
flags.FLAGS.mark_as_parsed()

from ferjax import runtime  # noqa: E402

runtime.setup()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
