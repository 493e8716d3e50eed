#!/usr/bin/env python3
"""A tiny field-survey CLI on fieldsync: projects, observations, photos, and the live feed.

    survey.py [--socket PATH | --data-dir DIR | --http DIR] COMMAND ...
      new NAME                          create a survey project, print its id
      add PROJECT SPECIES COUNT [NOTE]  record an observation, print its id
      count PROJECT ID N                change an observation's count (refused if it changed meanwhile)
      photo PROJECT ID FILE             attach a JPEG photo to an observation
      list PROJECT [SPECIES]            the observations (of one species); --sort=PATH orders
                                        them by a field, --sort=-PATH descending (--sort=-count)
      follow PROJECT [SINCE]            print observations as they are written here or arrive from peers

The Unix socket by default (--socket, or the daemon's default for --data-dir); --http DIR uses
HTTP with DIR/api.port and DIR/api.token instead.
"""
import argparse
import datetime
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fieldsync_client import Client, FieldSyncError, PreconditionFailed  # noqa: E402

COLL = "observations"


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--socket")
    ap.add_argument("--data-dir")
    ap.add_argument("--http", metavar="DIR")
    ap.add_argument("--sort", metavar="PATH", help="list: order by a dot path, -PATH descending")
    ap.add_argument("command", choices=["new", "add", "count", "photo", "list", "follow"])
    ap.add_argument("args", nargs="*")
    a = ap.parse_args(argv)
    fs = Client.over_http(a.http) if a.http else Client(socket_path=a.socket, data_dir=a.data_dir)
    if a.command == "new":
        print(fs.create_project(a.args[0], {"kind": "survey"})["id"])
        return 0
    survey, rest = fs.project(a.args[0]), a.args[1:]
    if a.command == "add":
        species, count, note = rest[0], int(rest[1]), rest[2] if len(rest) > 2 else ""
        at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        print(survey.create(COLL, {"species": species, "count": count, "note": note, "at": at})["id"])
    elif a.command == "count":
        doc = survey.get(COLL, rest[0])
        try:
            survey.put(COLL, rest[0], dict(doc["body"], count=int(rest[1])),
                       if_match=doc["version"])
        except PreconditionFailed:
            print("%s changed meanwhile; look again and retry" % rest[0], file=sys.stderr)
            return 1
    elif a.command == "photo":
        with open(rest[1], "rb") as f:
            photo = survey.put_blob(f, content_type="image/jpeg")
        doc = survey.get(COLL, rest[0])
        survey.put(COLL, rest[0], dict(doc["body"], photo=photo["ref"]), if_match=doc["version"])
        print("%s (%d bytes)" % (photo["id"], photo["size"]))
    elif a.command == "list":
        where = {"species": rest[0]} if rest else None
        for doc in survey.iter(COLL, where=where, sort=a.sort):
            b = doc["body"]
            print("%s  %s  %s  %s%s" % (doc["id"], b["species"], b["count"], b["note"],
                                        "  (conflict)" if doc["conflicts"] else ""))
    elif a.command == "follow":
        # Only observations, each with the document as it is now (no GET per change).
        for change in survey.follow(since=rest[0] if rest else "now", collections=[COLL],
                                    include_docs=True):
            who = "here" if change["local"] else "from " + change["author"][:8]
            if change["deleted"]:
                print("%d  %s deleted (%s)" % (change["seq"], change["id"], who), flush=True)
                continue
            body = (change["doc"] or {}).get("body") or {}
            print("%d  %s  %s  %s (%s)" % (change["seq"], change["id"], body.get("species"),
                                           body.get("count"), who), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except FieldSyncError as e:
        print("survey: %s" % e, file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
