"""An example robaudit plugin: the ``random-signs`` attack and the ``smooth`` purifier (one module each)."""
