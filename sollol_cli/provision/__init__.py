"""Declarative provisioning: gather facts, plan (pure), apply over a CommandRunner, record state."""
