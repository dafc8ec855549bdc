// A stock Socket.IO server with @socket.io/redis-adapter, as the host
// application's realtime layer runs it. Its only custom code: each socket joins
// the room `user:<auth.userId>`. Prints `listening <port>` once ready.
const { createServer } = require("node:http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

async function main() {
  const url = process.env.REDIS_URL || "redis://127.0.0.1:6379";
  const key = process.env.SOCKETIO_KEY || "socket.io";
  const pubClient = createClient({ url });
  const subClient = pubClient.duplicate();
  await Promise.all([pubClient.connect(), subClient.connect()]);

  const httpServer = createServer();
  const io = new Server(httpServer, { adapter: createAdapter(pubClient, subClient, { key }) });
  io.on("connection", (socket) => {
    const userId = socket.handshake.auth && socket.handshake.auth.userId;
    if (userId !== undefined) socket.join(`user:${userId}`);
    socket.emit("ready");
  });
  httpServer.listen(0, "127.0.0.1", () => {
    console.log(`listening ${httpServer.address().port}`);
  });
  const stop = () => { io.close(); pubClient.quit().catch(() => {}); subClient.quit().catch(() => {}); process.exit(0); };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => { console.error(err); process.exit(1); });
