"""An example robaudit plugin: the ``random-signs`` attack, the ``smooth`` purifier, the ``narrow-vit``
architecture and the ``mirror-dir:`` purifier source (one module each)."""
