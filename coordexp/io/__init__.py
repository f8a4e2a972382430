"""Reading the files the project and ms-swift write (see :mod:`.jsonl`)."""
