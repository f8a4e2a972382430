"""The code generator behind ``tools/regen.py``: schemas/ -> generated/ and the doc tables.

- ``load`` reads the schema files; ``validate`` checks their ``x-coordexp`` annotations against
  ``x_coordexp.meta.schema.json`` and the cross-references a meta-schema cannot express.
- ``views`` turns the validated documents into the records the templates read.
- ``render_python`` and ``render_docs`` fill the Jinja2 templates in ``templates/``;
  ``render_python`` also runs datamodel-code-generator for the pydantic models.
- ``compat`` compares the metric catalog with its released baseline.
- ``cli`` is the command (``python tools/regen.py [--check | --update-baseline]``).
"""
