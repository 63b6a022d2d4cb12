"""The demo page's assets (HTML, JavaScript, CSS), served by :mod:`strata.server.routes.web`."""
