"""GenieVM provider for KVM/libvirt."""
