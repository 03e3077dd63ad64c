"""What `tornado_prefork.serve` wires together: the application as an object,
factory or import string (`app`), its import in the parent (`preload`), and
what serve() does on the supervisor's events (`events`). Knows no signal
numbers."""
