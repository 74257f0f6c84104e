"""The operator console's static files (HTML, CSS, JavaScript modules), served by
``ipam.api.console`` under ``/console/``; a package so they ship in the wheel."""
