// vmifs-fuse-holder: keeps a mount's FUSE connection open while agents come and go.
//
//   vmifs-fuse-holder <socket path>      (the connection's /dev/fuse descriptor is fd 3)
//
// The agent that mounted starts it; it outlives that agent, so after a crash (kill -9, an abort)
// the connection stays open and readers wait instead of failing, and the next agent takes the
// descriptor from here and answers them. On its Unix socket (mode 0600) each connection sends one
// command byte: 'F' gets the descriptor (SCM_RIGHTS), 'Q' makes the holder exit (the agent stops
// with no successor). It also exits when the connection itself is gone (unmounted, aborted).
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

enum { FUSE_FD = 3 };

static int send_fd(int sock, int fd) {
  char byte = 'F';
  struct iovec iov = {&byte, 1};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } u;
  memset(&u, 0, sizeof u);
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof fd);
  return sendmsg(sock, &msg, MSG_NOSIGNAL) == 1 ? 0 : -1;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: vmifs-fuse-holder <socket path> (the FUSE descriptor as fd 3)\n");
    return 2;
  }
  struct stat st;
  if (fstat(FUSE_FD, &st) != 0 || !S_ISCHR(st.st_mode)) {
    fprintf(stderr, "vmifs-fuse-holder: fd 3 is not the FUSE device\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  const char *path = argv[1];
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof addr.sun_path) {
    fprintf(stderr, "vmifs-fuse-holder: socket path too long\n");
    return 2;
  }
  strcpy(addr.sun_path, path);
  int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (ls < 0) return 1;
  unlink(path);
  mode_t old = umask(0077);
  if (bind(ls, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(ls, 8) != 0) {
    fprintf(stderr, "vmifs-fuse-holder: %s: %s\n", path, strerror(errno));
    return 1;
  }
  umask(old);
  /* ready: the agent waits for this line before it relies on the holder */
  printf("ready %d\n", (int)getpid());
  fflush(stdout);
  for (;;) {
    /* no events asked of the FUSE descriptor: poll still reports POLLERR once the connection is gone */
    struct pollfd fds[2] = {{.fd = ls, .events = POLLIN}, {.fd = FUSE_FD, .events = 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents & (POLLERR | POLLHUP | POLLNVAL)) break;
    if (!(fds[0].revents & POLLIN)) continue;
    int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) continue;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char cmd = 0;
    ssize_t n = read(c, &cmd, 1);
    if (n == 1 && cmd == 'F') send_fd(c, FUSE_FD);
    close(c);
    if (n == 1 && cmd == 'Q') break;
  }
  unlink(path);
  return 0;
}
