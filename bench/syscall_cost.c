/* What a system call costs on this machine: the ones a request can waste (a recv that finds
 * nothing, a FIONREAD, a one-byte peek, an epoll_ctl) against a 300-byte send over loopback and
 * its recv, which every proxied request makes twice.
 *
 *     cc -O2 -o /tmp/syscall_cost bench/syscall_cost.c && /tmp/syscall_cost
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define TIME(label, n, stmt)                                          \
    do {                                                              \
        double t0 = now();                                            \
        for (int i = 0; i < (n); i++) { stmt; }                       \
        printf("%-32s %6.0f ns\n", label, (now() - t0) / (n) * 1e9); \
    } while (0)

int main(void) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(l, (struct sockaddr*)&a, sizeof a) || listen(l, 1) || getsockname(l, (struct sockaddr*)&a, &len)) return 1;
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr*)&a, sizeof a)) return 1;
    int s = accept(l, 0, 0);
    fcntl(s, F_SETFL, O_NONBLOCK);
    char b[1024] = {0};
    int n, ep = epoll_create1(0);
    struct epoll_event ev = {EPOLLIN | EPOLLET, {0}};
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
    TIME("getppid (the floor)", 1000000, getppid());
    TIME("recv that finds nothing", 1000000, recv(s, b, sizeof b, 0));
    TIME("recv MSG_PEEK, nothing there", 1000000, recv(s, b, 1, MSG_PEEK | MSG_DONTWAIT));
    TIME("ioctl FIONREAD", 1000000, ioctl(s, FIONREAD, &n));
    TIME("epoll_ctl EPOLL_CTL_MOD", 1000000, epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev));
    TIME("send 300 bytes + their recv", 200000, (send(c, b, 300, 0), recv(s, b, sizeof b, 0)));
    return 0;
}
