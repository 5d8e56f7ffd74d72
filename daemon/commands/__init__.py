"""One module per `capsync` sub-command; daemon.cli wires them into argparse."""
