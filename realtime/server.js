// A stock Socket.IO server, as the host application's realtime layer runs it,
// with one of the two Redis adapters:
// - ADAPTER unset or `redis`: @socket.io/redis-adapter (pub/sub, key SOCKETIO_KEY);
// - ADAPTER=streams: @socket.io/redis-streams-adapter on stream SOCKETIO_STREAM,
//   with connection state recovery on.
// Its only custom code: each socket joins the room `user:<auth.userId>`.
// Prints `listening <port>` once ready (with streams: once the adapter's
// reader is blocked on XREAD, so nothing appended after that line is missed).
const { createServer } = require("node:http");
const { randomUUID } = require("node:crypto");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createAdapter: createStreamsAdapter } = require("@socket.io/redis-streams-adapter");
const { createClient } = require("redis");

async function streamReaderBlocked(client, name) {
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline) {
    const list = await client.sendCommand(["CLIENT", "LIST"]);
    if (list.split("\n").some((l) => l.includes(` name=${name} `) && l.includes(" cmd=xread"))) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error("the streams adapter never started reading");
}

async function main() {
  const url = process.env.REDIS_URL || "redis://127.0.0.1:6379";
  const streams = process.env.ADAPTER === "streams";
  const httpServer = createServer();
  const clients = [];
  let io;
  if (streams) {
    // The name finds this server's reader in CLIENT LIST.
    const name = `sio-${randomUUID()}`;
    const redisClient = createClient({ url, name });
    await redisClient.connect();
    clients.push(redisClient);
    const streamName = process.env.SOCKETIO_STREAM || "socket.io";
    io = new Server(httpServer, {
      adapter: createStreamsAdapter(redisClient, { streamName }),
      connectionStateRecovery: {},
    });
    await streamReaderBlocked(redisClient, name);
  } else {
    const key = process.env.SOCKETIO_KEY || "socket.io";
    const pubClient = createClient({ url });
    const subClient = pubClient.duplicate();
    await Promise.all([pubClient.connect(), subClient.connect()]);
    clients.push(pubClient, subClient);
    io = new Server(httpServer, { adapter: createAdapter(pubClient, subClient, { key }) });
  }
  io.on("connection", (socket) => {
    const userId = socket.handshake.auth && socket.handshake.auth.userId;
    if (userId !== undefined) socket.join(`user:${userId}`);
    socket.emit("ready");
  });
  httpServer.listen(0, "127.0.0.1", () => {
    console.log(`listening ${httpServer.address().port}`);
  });
  const stop = () => { io.close(); for (const c of clients) c.quit().catch(() => {}); process.exit(0); };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => { console.error(err); process.exit(1); });
