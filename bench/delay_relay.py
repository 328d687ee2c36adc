#!/usr/bin/env python3
"""A TCP relay that delays every byte by a fixed time in each direction: a
user-space stand-in for `tc netem delay` on a link, for kernels without netem.
Each chunk is forwarded DELAY_MS after it arrived, in order, without waiting
for earlier chunks to be acknowledged (like a long wire: pipelining still pays
off, every round trip costs 2 x DELAY_MS).

    delay_relay.py LISTEN_PORT TARGET_PORT DELAY_MS

Listens on 127.0.0.1:LISTEN_PORT, connects to 127.0.0.1:TARGET_PORT per client.
Prints "ready" on stdout once listening; runs until killed.
"""
import asyncio
import socket
import sys


async def pump(reader, writer, delay):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def deliver():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(deliver())
    try:
        while data := await reader.read(65536):
            await queue.put((loop.time() + delay, data))
    except ConnectionError:
        pass
    await queue.put((0, None))
    try:
        await sender
    except ConnectionError:
        pass


async def main():
    listen_port, target_port, delay_ms = (int(a) for a in sys.argv[1:4])
    delay = delay_ms / 1000

    async def client(c_reader, c_writer):
        c_writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            c_writer.close()
            return
        s_writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(pump(c_reader, s_writer, delay), pump(s_reader, c_writer, delay))

    server = await asyncio.start_server(client, "127.0.0.1", listen_port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
