"""The callbacks' schedule helpers, importable from here as before; they live in :mod:`aime_rl.utils.schedule`
so that the world model's rollout callback (a lower layer) shares them:

- :func:`~aime_rl.utils.schedule.is_due`: SB3's ``EveryNTimesteps`` test (an event that could not run is retried
  at the next step);
- :func:`~aime_rl.utils.schedule.check_positive`: refuse a setting below 1, by keyword;
- :func:`~aime_rl.utils.schedule.renamed_keywords`: an old keyword spelling, with a ``DeprecationWarning``.
"""

from __future__ import annotations

from aime_rl.utils.schedule import check_positive, is_due, renamed_keywords

__all__ = ["check_positive", "is_due", "renamed_keywords"]
