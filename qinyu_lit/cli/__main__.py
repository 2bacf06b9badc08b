"""``python -m qinyu_lit.cli`` is ``qinyu-lit`` (subprocess tests and torchrun launches use it)."""

from . import main

main()
