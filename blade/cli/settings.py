"""`--set KEY=VALUE`: override any setting of a config file from the command line."""


def add_set_option(parser, example: str) -> None:
    """Add a repeatable `--set KEY=VALUE` option (stored in `args.settings`) to an argparse parser."""
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override any setting of the config, the value read as YAML; repeatable, {example}")


def parse_settings(items: list[str]) -> dict:
    """Parse `--set KEY=VALUE` items into a dict, each value read as YAML ("8" is 8, "[]" an empty list).

    Raises:
        ValueError: an item without "=" or with a value that is not valid YAML.
    """
    import yaml

    settings = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"invalid --set item {item!r}: expected KEY=VALUE, e.g. --set seed=1")
        try:
            settings[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"invalid --set value for {key.strip()}: {text!r} is not valid YAML ({error})") from error
    return settings
