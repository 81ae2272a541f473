#!/usr/bin/python3
"""One TCP stream's throughput between two namespace hosts, for bench/shaped_network.sh: what a link shaped by tc
tbf (or not shaped) really carries, next to the allreduce times measured over it. Not a network benchmark tool.

    ip netns exec H2 /usr/bin/python3 bench/tcp_throughput.py server PORT &
    ip netns exec H1 /usr/bin/python3 bench/tcp_throughput.py client ADDRESS PORT MEGABYTES
"""
import socket
import sys
import time

CHUNK = 1 << 20


def server(port):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(1)
    connection, _ = listener.accept()
    while connection.recv(CHUNK):
        pass
    connection.sendall(b"x")  # the client's clock stops when everything it sent has arrived
    connection.close()


def client(address, port, megabytes):
    for _ in range(50):  # the server may still be starting
        try:
            connection = socket.create_connection((address, port))
            break
        except ConnectionRefusedError:
            time.sleep(0.1)
    buffer = bytes(CHUNK)
    start = time.monotonic()
    for _ in range(megabytes):
        connection.sendall(buffer)
    connection.shutdown(socket.SHUT_WR)
    connection.recv(1)
    seconds = time.monotonic() - start
    print(f"{megabytes * CHUNK * 8 / seconds / 1e9:.2f}")  # Gbit/s


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]))
    else:
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
