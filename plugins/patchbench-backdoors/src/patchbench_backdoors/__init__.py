"""Backdoor triggers from the poisoning literature, as patchbench patch generators."""
