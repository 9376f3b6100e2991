"lisette against raw litellm on the loopback simulator: `python -m bench` (see bench/README.md)"
