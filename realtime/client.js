// A socket.io-client for one user: prints `ready` once joined, then each
// `plan:item-delta` payload as one JSON line — after checking it against the
// contract's JSON Schema (contract/plan-item-delta.schema.json) with ajv; a
// payload that violates it is printed as `INVALID <errors> <payload>`.
const path = require("node:path");
const Ajv2020 = require("ajv/dist/2020");
const { io } = require("socket.io-client");

const schema = require(path.join(__dirname, "..", "contract", "plan-item-delta.schema.json"));
const ajv = new Ajv2020({ allErrors: true, strict: true });
ajv.addSchema(schema);
const validate = ajv.getSchema(`${schema.$id}#/$defs/PlanItemDeltaPayload`);

const [url, userId] = process.argv.slice(2);
const socket = io(url, { auth: { userId: Number(userId) }, transports: ["websocket"] });
socket.on("ready", () => console.log("ready"));
socket.on("plan:item-delta", (payload) => {
  if (validate(payload)) {
    console.log(JSON.stringify(payload));
  } else {
    console.log(`INVALID ${JSON.stringify(validate.errors)} ${JSON.stringify(payload)}`);
  }
});
socket.on("connect_error", (err) => { console.error(`connect_error: ${err.message}`); });
process.on("SIGTERM", () => { socket.close(); process.exit(0); });
