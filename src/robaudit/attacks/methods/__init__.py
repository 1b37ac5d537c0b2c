"""The attack methods, one module each (FGSM and PGD, APGD, C&W, Square, AutoAttack): each registers itself in
``attacks.base.ATTACKS`` when imported, and ``robaudit.attacks`` imports every module here (``plugins.discover``),
so a new attack is one new file. The machinery they share (selection, EOT gradients, loss traces, precision) sits
one level up, in ``robaudit.attacks``."""
