#!/usr/bin/env node
// A tiny field-survey CLI on fieldsync: projects, observations, photos, and the live feed.
//
//   node survey.mjs [--socket PATH | --data-dir DIR] COMMAND ...
//     new NAME                          create a survey project, print its id
//     add PROJECT SPECIES COUNT [NOTE]  record an observation, print its id
//     count PROJECT ID N                change an observation's count (refused if it changed meanwhile)
//     photo PROJECT ID FILE             attach a JPEG photo to an observation
//     list PROJECT [SPECIES]            the observations (of one species); --sort=PATH orders
//                                       them by a field, --sort=-PATH descending (--sort=-count)
//     follow PROJECT [SINCE]            print observations as they are written here or arrive from peers
//
// --socket talks to the Unix socket (default <data dir>/api.sock, /run/fieldsync/api.sock as
// root); --data-dir DIR uses HTTP with DIR/api.port and DIR/api.token instead.
import { createReadStream, statSync } from "node:fs";
import { homedir } from "node:os";
import { FieldSync, PreconditionFailedError } from "../fieldsync.mjs";

async function connect(args) {
  const opt = (name) => {
    const i = args.indexOf(name);
    return i < 0 ? undefined : args.splice(i, 2)[1];
  };
  const socket = opt("--socket");
  const dataDir = opt("--data-dir");
  if (dataDir) return FieldSync.fromDataDir(dataDir);
  const root = process.getuid?.() === 0;
  const defaultDir = root ? "/var/lib/fieldsync"
    : `${process.env.XDG_DATA_HOME || `${homedir()}/.local/share`}/fieldsync`;
  return new FieldSync({ socketPath: socket ?? (root ? "/run/fieldsync/api.sock" : `${defaultDir}/api.sock`) });
}

async function main(args) {
  const sortAt = args.findIndex((a) => a.startsWith("--sort="));
  const sort = sortAt < 0 ? undefined : args.splice(sortAt, 1)[0].slice("--sort=".length);
  const fs = await connect(args);
  const [command, pid, ...rest] = args;
  const survey = pid ? fs.project(pid) : null;
  switch (command) {
    case "new": {
      console.log((await fs.createProject(pid, { kind: "survey" })).id);
      break;
    }
    case "add": {
      const [species, count, note = ""] = rest;
      const w = await survey.create("observations", { species, count: Number(count), note, at: new Date().toISOString() });
      console.log(w.id);
      break;
    }
    case "count": {
      const [id, n] = rest;
      const doc = await survey.get("observations", id);
      try {
        await survey.put("observations", id, { ...doc.body, count: Number(n) }, { ifMatch: doc.version });
      } catch (e) {
        if (!(e instanceof PreconditionFailedError)) throw e;
        console.error(`${id} changed meanwhile; look again and retry`);
        return 1;
      }
      break;
    }
    case "photo": {
      const [id, file] = rest;
      const photo = await survey.putBlob(createReadStream(file), { type: "image/jpeg" });
      const doc = await survey.get("observations", id);
      await survey.put("observations", id, { ...doc.body, photo: photo.ref }, { ifMatch: doc.version });
      console.log(`${photo.id} (${statSync(file).size} bytes)`);
      break;
    }
    case "list": {
      const [species] = rest;
      for await (const doc of survey.all("observations", { where: species ? { species } : undefined, sort }))
        console.log(`${doc.id}  ${doc.body.species}  ${doc.body.count}  ${doc.body.note}${doc.conflicts.length ? "  (conflict)" : ""}`);
      break;
    }
    case "follow": {
      const [since = "now"] = rest;
      // Only observations, each with the document as it is now (no GET per change).
      for await (const change of survey.follow({ since, collections: ["observations"], includeDocs: true })) {
        const who = change.local ? "here" : `from ${change.author.slice(0, 8)}`;
        if (change.deleted) {
          console.log(`${change.seq}  ${change.id} deleted (${who})`);
          continue;
        }
        const body = change.doc?.body;
        console.log(`${change.seq}  ${change.id}  ${body?.species}  ${body?.count} (${who})`);
      }
      break;
    }
    default:
      console.error("usage: survey.mjs [--socket PATH | --data-dir DIR] new|add|count|photo|list|follow ...");
      return 2;
  }
  return 0;
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (e) => {
  console.error(`survey: ${e.message}`);
  process.exitCode = 1;
});
