"""What every benchmark script does last: save its result as JSON and print its tables."""
import json


def finish(result, tables, json_path=None, width=14):
    """Write ``result`` to ``json_path`` (if given) and print ``tables(result)``.

    ``tables`` returns a list of (title, header, rows, notes).
    """
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=1)
    for title, header, rows, notes in tables(result):
        print(title)
        for r in [header] + rows:
            print("  " + "  ".join(f"{c:>{width}}" for c in r))
        for note in notes:
            print("  " + note)
    return result
