"""coordexp."""
