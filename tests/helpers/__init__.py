"""What tests in more than one folder share and is not a fixture: fixture data writers, tiny search specs, Ray nodes.

``tests/`` is on ``sys.path`` (pyproject's ``[tool.pytest.ini_options] pythonpath``), so a test imports these as
``from helpers.data_formats import write_voc``; fixtures live in ``tests/conftest.py``. No test module imports another.
"""
