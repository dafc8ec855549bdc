// A socket.io-client for one user: prints `ready` once joined, then each
// `plan:item-delta` payload as one JSON line — after checking it against the
// contract's JSON Schema (contract/plan-item-delta.schema.json) with ajv; a
// payload that violates it is printed as `INVALID <errors> <payload>`.
// Commands on stdin, one per line, to simulate a network cut:
// - `drop`: closes the transport without telling the server (as a lost
//   connection does) and does not reconnect; prints `dropped`;
// - `resume`: reconnects; prints `reconnected recovered=<true|false>`
//   (true when Socket.IO's connection state recovery restored the session).
const path = require("node:path");
const Ajv2020 = require("ajv/dist/2020");
const { io } = require("socket.io-client");
const readline = require("node:readline");

const schema = require(path.join(__dirname, "..", "contract", "plan-item-delta.schema.json"));
const ajv = new Ajv2020({ allErrors: true, strict: true });
ajv.addSchema(schema);
const validate = ajv.getSchema(`${schema.$id}#/$defs/PlanItemDeltaPayload`);

const [url, userId] = process.argv.slice(2);
const socket = io(url, { auth: { userId: Number(userId) }, transports: ["websocket"] });
let resumed = false;
socket.on("connect", () => {
  if (resumed) console.log(`reconnected recovered=${socket.recovered}`);
});
socket.on("ready", () => { if (!resumed) console.log("ready"); });
socket.on("plan:item-delta", (payload) => {
  if (validate(payload)) {
    console.log(JSON.stringify(payload));
  } else {
    console.log(`INVALID ${JSON.stringify(validate.errors)} ${JSON.stringify(payload)}`);
  }
});
socket.on("connect_error", (err) => { console.error(`connect_error: ${err.message}`); });
socket.on("disconnect", () => { if (!resumed) console.log("dropped"); });
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line === "drop") {
    socket.io.reconnection(false);
    socket.io.engine.close();
  } else if (line === "resume") {
    resumed = true;
    socket.io.reconnection(true);
    socket.io.open();
  }
});
process.on("SIGTERM", () => { socket.close(); process.exit(0); });
