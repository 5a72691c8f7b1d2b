"""One library function per pipeline step; the KFP components in components/ are thin wrappers over them.

Each step takes its config section as JSON (what the component receives) and local paths for its input and
output artifacts, so the same function runs under kfp.local, in a cluster pod, and in unit tests.
"""
