// Intentionally empty: the module is the header's declaration.
