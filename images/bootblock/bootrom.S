/*
 * The boot sector's workload as the machine's own firmware, paced by the PIT:
 * the chaos engine's guest.
 *
 * Same loop and same integrity rule as bootblock.S ('A' on COM1, then forever:
 * increment the first byte of each 4 KiB page of the area in ascending order
 * and print 'B' when the pass is complete), with three differences that make
 * a chaos attempt cheap under TCG:
 *
 * - it is the BIOS (-bios bootrom.bin, 64 KiB): no SeaBIOS run per boot;
 * - it halts between passes until the next PIT tick (PASS_HZ per second),
 *   so its vCPU idles instead of spinning a host core.  Every pass still
 *   dirties every page of the area, so each migration iteration finds the
 *   whole area dirty, as with the spinning boot sector;
 * - the area is [1 MiB, 33 MiB) (64 MiB of RAM do), not [1 MiB, 100 MiB):
 *   settling a migration, a snapshot and the page proof move a third of it.
 *
 * Reset: CS base 0xffff0000, IP 0xfff0 -> a far jump to F000:real (the ROM's
 * ISA alias at 0xf0000).  Real mode: 'A', A20, GDT, protected mode.  Then the
 * legacy PIC (vectors 0x20-0x2f, only IRQ0 unmasked), LAPIC LINT0 as ExtINT
 * (so the PIC reaches the CPU without an APIC setup), PIT channel 0 at
 * PASS_HZ, and an IDT in RAM at 0x1000 whose every gate acknowledges the PIC.
 *
 * Build:  as --32 -o bootrom.o bootrom.S
 *         ld -m elf_i386 -Ttext=0xf0000 --oformat=binary -o bootrom.bin bootrom.o
 */
        .equ    COM1,       0x3f8
        .equ    AREA_START, 0x00100000  /* 1 MiB */
        .equ    AREA_END,   0x02100000  /* 33 MiB (the spinning boot sector: 100 MiB) */
        .equ    PAGE,       0x1000
        .equ    IDT,        0x1000      /* RAM below the area: 256 gates */
        .equ    PASS_HZ,    50
        .equ    PIT_DIV,    1193182 / PASS_HZ
        .equ    LAPIC_LVT0, 0xfee00350

        .code16
        .text
        .globl  _start
_start:
real:
        cli
        cld
        xorw    %ax, %ax
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

        movw    $0xf000, %ax            /* the ROM's ISA alias */
        movw    %ax, %ds
        lgdtl   %ds:(gdt_ptr - _start)
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

        /* Legacy PIC: ICW1-4, master at 0x20, slave at 0x28; mask all but IRQ0. */
        movb    $0x11, %al
        outb    %al, $0x20
        outb    %al, $0xa0
        movb    $0x20, %al
        outb    %al, $0x21
        movb    $0x28, %al
        outb    %al, $0xa1
        movb    $0x04, %al
        outb    %al, $0x21
        movb    $0x02, %al
        outb    %al, $0xa1
        movb    $0x01, %al
        outb    %al, $0x21
        outb    %al, $0xa1
        movb    $0xfe, %al
        outb    %al, $0x21
        movb    $0xff, %al
        outb    %al, $0xa1

        /* LAPIC LINT0: ExtINT, unmasked (it is masked at reset). */
        movl    $0x700, LAPIC_LVT0

        /* PIT channel 0: mode 2 (rate generator), low then high byte. */
        movb    $0x34, %al
        outb    %al, $0x43
        movw    $PIT_DIV, %ax
        outb    %al, $0x40
        movb    %ah, %al
        outb    %al, $0x40

        /* IDT: 256 interrupt gates (selector 0x08, ring 0) to tick. */
        movl    $IDT, %edi
        movl    $256, %ecx
        movl    $tick, %eax
        movl    %eax, %ebx
        andl    $0xffff, %eax
        orl     $0x00080000, %eax
        andl    $0xffff0000, %ebx
        orl     $0x8e00, %ebx
gate:
        movl    %eax, (%edi)
        movl    %ebx, 4(%edi)
        addl    $8, %edi
        loop    gate
        lidt    idt_ptr

        movw    $COM1, %dx
pass:
        movl    $AREA_START, %ecx
page:
        incb    (%ecx)
        addl    $PAGE, %ecx
        cmpl    $AREA_END, %ecx
        jb      page
        movb    $'B', %al
        outb    %al, %dx
        sti                             /* sleep until the next tick */
        hlt
        cli
        jmp     pass

tick:                                   /* acknowledge the PIC, return */
        pushl   %eax
        movb    $0x20, %al
        outb    %al, $0x20
        popl    %eax
        iret

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
idt_ptr:
        .word   256 * 8 - 1
        .long   IDT

        .org    0xfff0                  /* the reset vector */
        .code16
        ljmp    $0xf000, $(real - _start)
        .org    0x10000
