/*
 * Migration-test boot sector guest.
 *
 * Loaded by the BIOS at 0x7c00 in real mode.  It prints 'A' on COM1,
 * switches to flat 32-bit protected mode (A20 enabled via port 0x92) and
 * then dirties memory forever: on every pass it increments the first byte
 * of each 4 KiB page in [1 MiB, 100 MiB) in ascending order and prints 'B'
 * on COM1 when the pass is complete.
 *
 * Integrity rule (checked by the harness after the guest is stopped): the
 * first bytes of all pages in [1 MiB, 100 MiB) are equal, except that the
 * pages at and after at most one boundary are exactly one behind (mod 256).
 *
 * Build:  as --32 -o bootblock.o bootblock.S
 *         ld -m elf_i386 -Ttext=0x7c00 --oformat=binary -o bootblock.bin bootblock.o
 */

/* Plain gas (no C preprocessor): constants via .equ. */
        .equ    COM1,       0x3f8
        .equ    AREA_START, 0x00100000  /* 1 MiB */
        .equ    AREA_END,   0x06400000  /* 100 MiB */
        .equ    PAGE,       0x1000

        .code16
        .text
        .globl  _start
_start:
        cli
        cld
        xorw    %ax, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    $0x7c00, %sp

        movw    $COM1, %dx
        movb    $'A', %al
        outb    %al, %dx

        /* Fast A20 gate: set bit 1 of port 0x92, never bit 0 (reset). */
        inb     $0x92, %al
        orb     $0x02, %al
        andb    $0xfe, %al
        outb    %al, $0x92

        lgdtl   gdt_ptr
        movl    %cr0, %eax
        orl     $1, %eax                /* CR0.PE */
        movl    %eax, %cr0
        ljmpl   $0x08, $protected

        .code32
protected:
        movw    $0x10, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %fs
        movw    %ax, %gs
        movw    %ax, %ss
        movl    $0x7c00, %esp

        movw    $COM1, %dx
        movb    $'B', %bl
pass:
        movl    $AREA_START, %ecx
page:
        incb    (%ecx)
        addl    $PAGE, %ecx
        cmpl    $AREA_END, %ecx
        jb      page
        movb    %bl, %al
        outb    %al, %dx
        jmp     pass

        /* Flat GDT: null, 4 GiB code (0x08), 4 GiB data (0x10). */
        .p2align 3
gdt:
        .quad   0x0000000000000000
        .quad   0x00cf9a000000ffff
        .quad   0x00cf92000000ffff
gdt_end:
gdt_ptr:
        .word   gdt_end - gdt - 1
        .long   gdt

        .org    510
        .byte   0x55, 0xaa
