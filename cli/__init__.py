"""``ig``: the command line, the composition root above core, stream, models and api.

Start-up stays lean: each command imports what it needs (Feast, Bytewax, torch) inside its
function, so ``ig env`` or ``ig redis up`` answer at once.
"""
