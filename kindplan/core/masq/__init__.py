"""Masquerade in one home: the backend-neutral value (value.py), the dialects that read and write
it for one backend each (iptables.py, nftables.py), and the registry that names them
(dialects.py)."""
