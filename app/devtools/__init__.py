"""Developer and install-check tools that are not part of the studio's own windows.

``selftest`` backs ``weightsmith-gui --self-test`` (the bundle's install check), ``screenshot`` backs
``--screenshot`` (one PNG of the idle window), and ``screenshots`` (``make screenshots``) refreshes the
README's images by running ``--screenshot`` once per shot.
"""
