// A socket.io-client for one user: prints `ready` once joined, then each
// `plan:item-delta` payload as one JSON line.
const { io } = require("socket.io-client");

const [url, userId] = process.argv.slice(2);
const socket = io(url, { auth: { userId: Number(userId) }, transports: ["websocket"] });
socket.on("ready", () => console.log("ready"));
socket.on("plan:item-delta", (payload) => console.log(JSON.stringify(payload)));
socket.on("connect_error", (err) => { console.error(`connect_error: ${err.message}`); });
process.on("SIGTERM", () => { socket.close(); process.exit(0); });
