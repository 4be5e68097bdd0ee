[New LWP 7196]
[New LWP 7197]
[New LWP 7198]
[Thread debugging using libthread_db enabled]
Using host libthread_db library "/lib/x86_64-linux-gnu/libthread_db.so.1".
0x00007fe9cb090366 in __ppoll (fds=0x5563f3057860, nfds=4, timeout=<optimized out>, sigmask=0x0) at ../sysdeps/unix/sysv/linux/ppoll.c:42

==harness: all threads==

Thread 4 (Thread 0x7fe9c927a6c0 (LWP 7198) "qemu-system-x86"):
#0  __futex_abstimed_wait_common64 (private=0, cancel=true, abstime=0x0, op=393, expected=0, futex_word=0x5563f242d94c) at ./nptl/futex-internal.c:57
#1  __futex_abstimed_wait_common (futex_word=futex_word@entry=0x5563f242d94c, expected=expected@entry=0, clockid=clockid@entry=0, abstime=abstime@entry=0x0, private=private@entry=0, cancel=cancel@entry=true) at ./nptl/futex-internal.c:87
#2  0x00007fe9cb019f7b in __GI___futex_abstimed_wait_cancelable64 (futex_word=futex_word@entry=0x5563f242d94c, expected=expected@entry=0, clockid=clockid@entry=0, abstime=abstime@entry=0x0, private=private@entry=0) at ./nptl/futex-internal.c:139
#3  0x00007fe9cb01c5d8 in __pthread_cond_wait_common (abstime=0x0, clockid=0, mutex=0x5563cacdd2c0, cond=0x5563f242d920) at ./nptl/pthread_cond_wait.c:503
#4  ___pthread_cond_wait (cond=0x5563f242d920, mutex=0x5563cacdd2c0) at ./nptl/pthread_cond_wait.c:618
#5  0x00005563c9c5891b in qemu_cond_wait_impl ()
#6  0x00005563c98a22ee in qemu_wait_io_event ()
#7  0x00005563c99223b6 in ?? ()
#8  0x00005563c9c57d28 in ?? ()
#9  0x00007fe9cb01d1f5 in start_thread (arg=<optimized out>) at ./nptl/pthread_create.c:442
#10 0x00007fe9cb09d8ec in clone3 () at ../sysdeps/unix/sysv/linux/x86_64/clone3.S:81

Thread 3 (Thread 0x7fe9c9afd6c0 (LWP 7197) "qemu-system-x86"):
#0  0x00007fe9cb09026f in __GI___poll (fds=0x7fe97c0031e0, nfds=3, timeout=-1) at ../sysdeps/unix/sysv/linux/poll.c:29
#1  0x00007fe9cb53c91e in ?? () from /lib/x86_64-linux-gnu/libglib-2.0.so.0
#2  0x00007fe9cb53cc5f in g_main_loop_run () from /lib/x86_64-linux-gnu/libglib-2.0.so.0
#3  0x00005563c9af7ce9 in ?? ()
#4  0x00005563c9c57d28 in ?? ()
#5  0x00007fe9cb01d1f5 in start_thread (arg=<optimized out>) at ./nptl/pthread_create.c:442
#6  0x00007fe9cb09d8ec in clone3 () at ../sysdeps/unix/sysv/linux/x86_64/clone3.S:81

Thread 2 (Thread 0x7fe9ca3ff6c0 (LWP 7196) "qemu-system-x86"):
#0  syscall () at ../sysdeps/unix/sysv/linux/x86_64/syscall.S:38
#1  0x00005563c9c5902a in qemu_event_wait ()
#2  0x00005563c9c64872 in ?? ()
#3  0x00005563c9c57d28 in ?? ()
#4  0x00007fe9cb01d1f5 in start_thread (arg=<optimized out>) at ./nptl/pthread_create.c:442
#5  0x00007fe9cb09d8ec in clone3 () at ../sysdeps/unix/sysv/linux/x86_64/clone3.S:81

Thread 1 (Thread 0x7fe9ca969f00 (LWP 7195) "qemu-system-x86"):
#0  0x00007fe9cb090366 in __ppoll (fds=0x5563f3057860, nfds=4, timeout=<optimized out>, sigmask=0x0) at ../sysdeps/unix/sysv/linux/ppoll.c:42
#1  0x00005563c9c71a3e in qemu_poll_ns ()
#2  0x00005563c9c6e98e in main_loop_wait ()
#3  0x00005563c98acdf9 in qemu_main_loop ()
#4  0x00005563c9bade1c in ?? ()
#5  0x00005563c961ec05 in main ()
[Inferior 1 (process 7195) detached]
