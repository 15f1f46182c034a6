"""``python -m loki.eval ...``: lm-eval's own command line with the ``loki`` model registered."""

from loki.eval.plugin import lm_eval_main

lm_eval_main()
