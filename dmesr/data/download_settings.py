"""Defaults of ``dmesr data images`` (and the Amazon file downloads), apart from the downloader so that the
command line shows them in its help without importing requests, pandas and PIL."""

DEFAULT_WORKERS = 16  # downloads are waits on the network, not CPU work: many run at once
DEFAULT_TIMEOUT = 10.0  # seconds to connect, and between two reads of a reply
DEFAULT_MAX_BYTES = 20 * 1024 * 1024  # a product photo is well under this; anything bigger is not one
DEFAULT_RETRIES = 3  # for connection errors and 429 / 5xx replies, with exponential backoff
