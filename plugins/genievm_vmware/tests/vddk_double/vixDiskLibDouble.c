/*
 * vixDiskLibDouble.c -- a TEST DOUBLE of VMware's libvixDiskLib.so (VDDK), for GenieVM's tests.
 *
 * VDDK cannot be downloaded on the test machines, so the tests build this file into
 * <tmp>/lib64/libvixDiskLib.so and point the ctypes wrapper at it. It exports the subset of
 * the VixDiskLib C API that genievm_vmware.vddk calls, with VDDK's names, signatures, struct
 * layouts (vixDiskLibDouble.h: those of vixDiskLib.h in VDDK 7.0 and 8.0 on LP64 Linux) and error codes, over
 * plain files. It is not VMware code and does not talk to any server.
 *
 * How it maps VDDK onto files:
 *  - a disk path "[datastore] dir/disk.vmdk" is the file $GENIEVM_VDDK_DOUBLE_ROOT/datastore/dir/disk.vmdk;
 *    the disk's capacity is the file's size rounded down to whole 512-byte sectors;
 *  - QueryAllocatedBlocks reports the chunks that hold data according to SEEK_DATA/SEEK_HOLE,
 *    so holes of a sparse file are unallocated;
 *  - ConnectEx accepts user $GENIEVM_VDDK_DOUBLE_USER (default "root") with password
 *    $GENIEVM_VDDK_DOUBLE_PASSWORD and, when $GENIEVM_VDDK_DOUBLE_THUMBPRINT is set, only that
 *    thumbprint; $GENIEVM_VDDK_DOUBLE_NO_QUERY=1 makes QueryAllocatedBlocks answer VIX_E_NOT_SUPPORTED;
 *  - $GENIEVM_VDDK_DOUBLE_FAIL_CLOSE=1 makes Close answer VIX_E_FILE_ERROR (after releasing the handle);
 *  - $GENIEVM_VDDK_DOUBLE_LOG_PASSWORD set makes ConnectEx log the password it got, as a careless library might.
 *
 * Compiled with -DVDDK_DOUBLE_BEFORE_6_7 it leaves out the functions VDDK added in 6.7
 * (QueryAllocatedBlocks, FreeBlockList, AllocateConnectParams), as an older library would.
 *
 * Functions named VixDiskLibDouble_* exist only in the double: the tests use them to count
 * open connections and disks and to see what the wrapper passed to ConnectEx.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vixDiskLibDouble.h"

/* ---- the double's own state ---- */

#define CONNECTION_MAGIC 0x56444b43u /* "VDKC" */
#define DISK_MAGIC 0x56444b44u       /* "VDKD" */

typedef struct {
   uint32_t magic;
   Bool readOnly;
   char modes[64];
} DoubleConnection;

typedef struct {
   uint32_t magic;
   int fd;
   Bool readOnly;
   VixDiskLibSectorType capacity;
   char uuid[40];
} DoubleDisk;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int initialized;
static int initCount;
static int openConnections;
static int openDisks;
static char lastConnect[1024];
static VixDiskLibGenericLogFunc *logFunc;

static void
LogMessage(const char *fmt, ...)
{
   va_list args;
   if (logFunc == NULL) {
      return;
   }
   va_start(args, fmt);
   logFunc(fmt, args);
   va_end(args);
}

static const char *
EnvOr(const char *name, const char *fallback)
{
   const char *value = getenv(name);
   return value != NULL ? value : fallback;
}

/* ---- the VixDiskLib API ---- */

VixError
VixDiskLib_InitEx(uint32_t majorVersion, uint32_t minorVersion, VixDiskLibGenericLogFunc *log,
                  VixDiskLibGenericLogFunc *warn, VixDiskLibGenericLogFunc *panic, const char *libDir,
                  const char *configFile)
{
   (void)warn;
   (void)panic;
   (void)configFile;
   pthread_mutex_lock(&lock);
   if (initialized) {
      pthread_mutex_unlock(&lock);
      return VIX_E_FAIL; /* the real library must be initialized once per process */
   }
   initialized = 1;
   initCount++;
   logFunc = log;
   pthread_mutex_unlock(&lock);
   LogMessage("VixDiskLibDouble: initialized for API %u.%u, libDir %s\n", majorVersion, minorVersion,
              libDir != NULL ? libDir : "(null)");
   return VIX_OK;
}

void
VixDiskLib_Exit(void)
{
   pthread_mutex_lock(&lock);
   initialized = 0;
   logFunc = NULL;
   pthread_mutex_unlock(&lock);
}

const char *
VixDiskLib_ListTransportModes(void)
{
   return "file:san:hotadd:nbdssl:nbd";
}

#ifndef VDDK_DOUBLE_BEFORE_6_7
VixDiskLibConnectParams *
VixDiskLib_AllocateConnectParams(void)
{
   return calloc(1, sizeof(VixDiskLibConnectParams));
}
#endif

void
VixDiskLib_FreeConnectParams(VixDiskLibConnectParams *connectParams)
{
   free(connectParams);
}

static int
ModesAreKnown(const char *modes)
{
   char copy[64];
   char *saveptr = NULL;
   char *mode;
   if (strlen(modes) >= sizeof copy) {
      return 0;
   }
   strcpy(copy, modes);
   for (mode = strtok_r(copy, ":", &saveptr); mode != NULL; mode = strtok_r(NULL, ":", &saveptr)) {
      if (strcmp(mode, "file") && strcmp(mode, "san") && strcmp(mode, "hotadd") && strcmp(mode, "nbd") &&
          strcmp(mode, "nbdssl")) {
         return 0;
      }
   }
   return 1;
}

VixError
VixDiskLib_ConnectEx(const VixDiskLibConnectParams *connectParams, Bool readOnly, const char *snapshotRef,
                     const char *transportModes, void **connection)
{
   const char *modes = transportModes != NULL ? transportModes : VixDiskLib_ListTransportModes();
   const char *thumbprint = getenv("GENIEVM_VDDK_DOUBLE_THUMBPRINT");
   DoubleConnection *conn;

   if (!initialized) {
      return VIX_E_DISK_NOINIT;
   }
   if (connectParams == NULL || connection == NULL || connectParams->serverName == NULL ||
       !ModesAreKnown(modes)) {
      return VIX_E_INVALID_ARG;
   }
   if (connectParams->vmxSpec != NULL && strncmp(connectParams->vmxSpec, "moref=", 6) != 0) {
      return VIX_E_INVALID_ARG;
   }
   if (snapshotRef != NULL && connectParams->vmxSpec == NULL) {
      return VIX_E_INVALID_ARG; /* a snapshot only means something for a VM */
   }
   if (strcmp(connectParams->serverName, EnvOr("GENIEVM_VDDK_DOUBLE_SERVER", connectParams->serverName))) {
      return VIX_E_CANNOT_CONNECT_TO_HOST;
   }
   if (thumbprint != NULL &&
       (connectParams->thumbPrint == NULL || strcmp(connectParams->thumbPrint, thumbprint) != 0)) {
      return VIX_E_NET_HTTP_SSL_SECURITY;
   }
   if (connectParams->credType != VIXDISKLIB_CRED_UID || connectParams->creds.uid.userName == NULL ||
       connectParams->creds.uid.password == NULL ||
       strcmp(connectParams->creds.uid.userName, EnvOr("GENIEVM_VDDK_DOUBLE_USER", "root")) != 0 ||
       strcmp(connectParams->creds.uid.password, EnvOr("GENIEVM_VDDK_DOUBLE_PASSWORD", "")) != 0) {
      return VIX_E_HOST_USER_PERMISSIONS;
   }
   conn = calloc(1, sizeof *conn);
   if (conn == NULL) {
      return VIX_E_OUT_OF_MEMORY;
   }
   conn->magic = CONNECTION_MAGIC;
   conn->readOnly = readOnly;
   snprintf(conn->modes, sizeof conn->modes, "%s", modes);

   pthread_mutex_lock(&lock);
   openConnections++;
   snprintf(lastConnect, sizeof lastConnect,
            "server=%s;thumbprint=%s;user=%s;vmxSpec=%s;snapshot=%s;modes=%s;readOnly=%d;port=%u",
            connectParams->serverName, connectParams->thumbPrint ? connectParams->thumbPrint : "",
            connectParams->creds.uid.userName, connectParams->vmxSpec ? connectParams->vmxSpec : "",
            snapshotRef ? snapshotRef : "", transportModes ? transportModes : "", readOnly ? 1 : 0,
            connectParams->port);
   pthread_mutex_unlock(&lock);
   LogMessage("VixDiskLibDouble: connected to %s as %s\n", connectParams->serverName,
              connectParams->creds.uid.userName);
   if (getenv("GENIEVM_VDDK_DOUBLE_LOG_PASSWORD") != NULL) {
      /* a careless library: lets the tests check that the wrapper hides the password in log lines */
      LogMessage("VixDiskLibDouble: password is %s\n", connectParams->creds.uid.password);
   }
   *connection = conn;
   return VIX_OK;
}

VixError
VixDiskLib_Disconnect(void *connection)
{
   DoubleConnection *conn = connection;
   if (conn == NULL || conn->magic != CONNECTION_MAGIC) {
      return VIX_E_INVALID_ARG;
   }
   conn->magic = 0;
   free(conn);
   pthread_mutex_lock(&lock);
   openConnections--;
   pthread_mutex_unlock(&lock);
   return VIX_OK;
}

/* "[datastore] dir/disk.vmdk" -> "$ROOT/datastore/dir/disk.vmdk"; 0 if the path is not of that form. */
static int
DiskFilePath(const char *path, char *out, size_t outLen)
{
   const char *root = getenv("GENIEVM_VDDK_DOUBLE_ROOT");
   const char *close = strchr(path, ']');
   int written;
   if (root == NULL || path[0] != '[' || close == NULL || close[1] != ' ' || strstr(path, "..") != NULL) {
      return 0;
   }
   written = snprintf(out, outLen, "%s/%.*s/%s", root, (int)(close - path - 1), path + 1, close + 2);
   return written > 0 && (size_t)written < outLen;
}

VixError
VixDiskLib_Open(void *connection, const char *path, uint32_t flags, void **diskHandle)
{
   DoubleConnection *conn = connection;
   Bool readOnly = (flags & VIXDISKLIB_FLAG_OPEN_READ_ONLY) != 0;
   char file[4096];
   struct stat st;
   DoubleDisk *disk;
   int fd;

   if (!initialized) {
      return VIX_E_DISK_NOINIT;
   }
   if (conn == NULL || conn->magic != CONNECTION_MAGIC || path == NULL || diskHandle == NULL) {
      return VIX_E_INVALID_ARG;
   }
   if (!readOnly && conn->readOnly) {
      return VIX_E_FILE_READ_ONLY; /* a read-only connection cannot open a disk for writing */
   }
   if (!DiskFilePath(path, file, sizeof file)) {
      return VIX_E_FILE_NOT_FOUND;
   }
   fd = open(file, readOnly ? O_RDONLY : O_RDWR);
   if (fd < 0) {
      return errno == ENOENT ? VIX_E_FILE_NOT_FOUND : VIX_E_FILE_ACCESS_ERROR;
   }
   if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      close(fd);
      return VIX_E_DISK_INVAL;
   }
   disk = calloc(1, sizeof *disk);
   if (disk == NULL) {
      close(fd);
      return VIX_E_OUT_OF_MEMORY;
   }
   disk->magic = DISK_MAGIC;
   disk->fd = fd;
   disk->readOnly = readOnly;
   disk->capacity = (VixDiskLibSectorType)st.st_size / VIXDISKLIB_SECTOR_SIZE;
   snprintf(disk->uuid, sizeof disk->uuid, "60 00 c2 9d %02x %02x %02x %02x-double", (unsigned)(st.st_ino & 0xff),
            (unsigned)((st.st_ino >> 8) & 0xff), (unsigned)((st.st_ino >> 16) & 0xff),
            (unsigned)((st.st_ino >> 24) & 0xff));
   pthread_mutex_lock(&lock);
   openDisks++;
   pthread_mutex_unlock(&lock);
   *diskHandle = disk;
   return VIX_OK;
}

static DoubleDisk *
DiskOf(void *diskHandle)
{
   DoubleDisk *disk = diskHandle;
   return disk != NULL && disk->magic == DISK_MAGIC ? disk : NULL;
}

const char *
VixDiskLib_GetTransportMode(void *diskHandle)
{
   (void)diskHandle;
   return "file";
}

VixError
VixDiskLib_GetInfo(void *diskHandle, VixDiskLibInfo **info)
{
   DoubleDisk *disk = DiskOf(diskHandle);
   VixDiskLibInfo *result;
   if (disk == NULL || info == NULL) {
      return VIX_E_INVALID_ARG;
   }
   result = calloc(1, sizeof *result);
   if (result == NULL) {
      return VIX_E_OUT_OF_MEMORY;
   }
   result->capacity = disk->capacity;
   result->biosGeo.heads = result->physGeo.heads = 255;
   result->biosGeo.sectors = result->physGeo.sectors = 63;
   result->biosGeo.cylinders = result->physGeo.cylinders = (uint32_t)(disk->capacity / (255 * 63));
   result->adapterType = VIXDISKLIB_ADAPTER_SCSI_LSILOGIC;
   result->numLinks = 1;
   result->parentFileNameHint = NULL;
   result->uuid = strdup(disk->uuid);
   result->logicalSectorSize = VIXDISKLIB_SECTOR_SIZE;
   result->physicalSectorSize = 4096;
   *info = result;
   return VIX_OK;
}

void
VixDiskLib_FreeInfo(VixDiskLibInfo *info)
{
   if (info != NULL) {
      free(info->parentFileNameHint);
      free(info->uuid);
      free(info);
   }
}

static VixError
CheckRange(const DoubleDisk *disk, VixDiskLibSectorType startSector, VixDiskLibSectorType numSectors)
{
   if (startSector > disk->capacity || numSectors > disk->capacity - startSector) {
      return VIX_E_DISK_OUTOFRANGE;
   }
   return VIX_OK;
}

VixError
VixDiskLib_Read(void *diskHandle, VixDiskLibSectorType startSector, VixDiskLibSectorType numSectors,
                uint8_t *readBuffer)
{
   DoubleDisk *disk = DiskOf(diskHandle);
   size_t done = 0, total;
   VixError err;
   if (disk == NULL || readBuffer == NULL) {
      return VIX_E_INVALID_ARG;
   }
   if ((err = CheckRange(disk, startSector, numSectors)) != VIX_OK) {
      return err;
   }
   total = numSectors * VIXDISKLIB_SECTOR_SIZE;
   while (done < total) {
      ssize_t n = pread(disk->fd, readBuffer + done, total - done,
                        (off_t)(startSector * VIXDISKLIB_SECTOR_SIZE + done));
      if (n < 0 && errno == EINTR) {
         continue;
      }
      if (n <= 0) {
         return VIX_E_FILE_ERROR;
      }
      done += (size_t)n;
   }
   return VIX_OK;
}

VixError
VixDiskLib_Write(void *diskHandle, VixDiskLibSectorType startSector, VixDiskLibSectorType numSectors,
                 const uint8_t *writeBuffer)
{
   DoubleDisk *disk = DiskOf(diskHandle);
   size_t done = 0, total;
   VixError err;
   if (disk == NULL || writeBuffer == NULL) {
      return VIX_E_INVALID_ARG;
   }
   if (disk->readOnly) {
      return VIX_E_FILE_READ_ONLY;
   }
   if ((err = CheckRange(disk, startSector, numSectors)) != VIX_OK) {
      return err;
   }
   total = numSectors * VIXDISKLIB_SECTOR_SIZE;
   while (done < total) {
      ssize_t n = pwrite(disk->fd, writeBuffer + done, total - done,
                         (off_t)(startSector * VIXDISKLIB_SECTOR_SIZE + done));
      if (n < 0 && errno == EINTR) {
         continue;
      }
      if (n < 0 && errno == ENOSPC) {
         return VIX_E_DISK_FULL;
      }
      if (n <= 0) {
         return VIX_E_FILE_ERROR;
      }
      done += (size_t)n;
   }
   return VIX_OK;
}

VixError
VixDiskLib_Flush(void *diskHandle)
{
   DoubleDisk *disk = DiskOf(diskHandle);
   if (disk == NULL) {
      return VIX_E_INVALID_ARG;
   }
   return fsync(disk->fd) == 0 ? VIX_OK : VIX_E_FILE_ERROR;
}

#ifndef VDDK_DOUBLE_BEFORE_6_7
/* 1 if any byte of [start, end) holds data (is not in a hole); -1 on error. */
static int
RangeHasData(int fd, off_t start, off_t end)
{
   off_t data = lseek(fd, start, SEEK_DATA);
   if (data < 0) {
      return errno == ENXIO ? 0 : -1; /* ENXIO: only a hole from start to the end of the file */
   }
   return data < end;
}

VixError
VixDiskLib_QueryAllocatedBlocks(void *diskHandle, VixDiskLibSectorType startSector, VixDiskLibSectorType numSectors,
                                VixDiskLibSectorType chunkSize, VixDiskLibBlockList **blockList)
{
   DoubleDisk *disk = DiskOf(diskHandle);
   VixDiskLibBlockList *list;
   VixDiskLibSectorType chunk, numChunks;
   VixError err;
   const char *noQuery = getenv("GENIEVM_VDDK_DOUBLE_NO_QUERY");

   if (disk == NULL || blockList == NULL) {
      return VIX_E_INVALID_ARG;
   }
   if (noQuery != NULL && strcmp(noQuery, "1") == 0) {
      return VIX_E_NOT_SUPPORTED;
   }
   if (chunkSize < VIXDISKLIB_MIN_CHUNK_SIZE || (chunkSize & (chunkSize - 1)) != 0 || numSectors % chunkSize != 0 ||
       startSector % chunkSize != 0 || numSectors / chunkSize > VIXDISKLIB_MAX_CHUNK_NUMBER) {
      return VIX_E_INVALID_ARG;
   }
   if ((err = CheckRange(disk, startSector, numSectors)) != VIX_OK) {
      return err;
   }
   numChunks = numSectors / chunkSize;
   list = calloc(1, sizeof *list + (numChunks ? numChunks - 1 : 0) * sizeof(VixDiskLibBlock));
   if (list == NULL) {
      return VIX_E_OUT_OF_MEMORY;
   }
   for (chunk = 0; chunk < numChunks; chunk++) {
      VixDiskLibSectorType first = startSector + chunk * chunkSize;
      int hasData = RangeHasData(disk->fd, (off_t)(first * VIXDISKLIB_SECTOR_SIZE),
                                 (off_t)((first + chunkSize) * VIXDISKLIB_SECTOR_SIZE));
      if (hasData < 0) {
         free(list);
         return VIX_E_FILE_ERROR;
      }
      if (!hasData) {
         continue;
      }
      if (list->numBlocks > 0 &&
          list->blocks[list->numBlocks - 1].offset + list->blocks[list->numBlocks - 1].length == first) {
         list->blocks[list->numBlocks - 1].length += chunkSize;
      } else {
         list->blocks[list->numBlocks].offset = first;
         list->blocks[list->numBlocks].length = chunkSize;
         list->numBlocks++;
      }
   }
   *blockList = list;
   return VIX_OK;
}

VixError
VixDiskLib_FreeBlockList(VixDiskLibBlockList *blockList)
{
   free(blockList);
   return VIX_OK;
}
#endif

VixError
VixDiskLib_Close(void *diskHandle)
{
   DoubleDisk *disk = DiskOf(diskHandle);
   const char *fail = getenv("GENIEVM_VDDK_DOUBLE_FAIL_CLOSE");
   if (disk == NULL) {
      return VIX_E_INVALID_ARG;
   }
   close(disk->fd);
   disk->magic = 0;
   free(disk);
   pthread_mutex_lock(&lock);
   openDisks--;
   pthread_mutex_unlock(&lock);
   /* as when flushing on close fails: the handle is gone all the same */
   return fail != NULL && strcmp(fail, "1") == 0 ? VIX_E_FILE_ERROR : VIX_OK;
}

static const struct {
   VixError code;
   const char *text;
} errorTexts[] = {
   {VIX_OK, "The operation was successful"},
   {VIX_E_FAIL, "Unknown error"},
   {VIX_E_OUT_OF_MEMORY, "Memory allocation failed: out of memory"},
   {VIX_E_INVALID_ARG, "One of the parameters was invalid"},
   {VIX_E_FILE_NOT_FOUND, "The file was not found"},
   {VIX_E_NOT_SUPPORTED, "The operation is not supported"},
   {VIX_E_FILE_ERROR, "A file access error occurred on the host or guest operating system"},
   {VIX_E_DISK_FULL, "An error occurred while writing a file; the disk is full"},
   {VIX_E_FILE_READ_ONLY, "The file is write-protected"},
   {VIX_E_FILE_ACCESS_ERROR, "You do not have access rights to this file"},
   {VIX_E_AUTHENTICATION_FAIL, "Authentication failed"},
   {VIX_E_INVALID_HANDLE, "The handle is not a valid VIX object"},
   {VIX_E_HOST_USER_PERMISSIONS, "Insufficient permissions in the host operating system"},
   {VIX_E_DISK_INVAL, "One of the parameters supplied is invalid"},
   {VIX_E_DISK_NOINIT, "The disk library has not been initialized"},
   {VIX_E_DISK_OUTOFRANGE, "The data to be read or written is out of the range of the disk"},
   {VIX_E_CANNOT_CONNECT_TO_HOST, "Cannot connect to host"},
   {VIX_E_NET_HTTP_SSL_SECURITY, "SSL error: the host's certificate does not match the thumbprint"},
};

char *
VixDiskLib_GetErrorText(VixError err, const char *locale)
{
   size_t i;
   (void)locale;
   for (i = 0; i < sizeof errorTexts / sizeof errorTexts[0]; i++) {
      if (errorTexts[i].code == VIX_ERROR_CODE(err)) {
         return strdup(errorTexts[i].text);
      }
   }
   return strdup("Unknown error");
}

void
VixDiskLib_FreeErrorText(char *errMsg)
{
   free(errMsg);
}

/* ---- test-only functions: not part of VDDK ---- */

int
VixDiskLibDouble_OpenConnections(void)
{
   return openConnections;
}

int
VixDiskLibDouble_OpenDisks(void)
{
   return openDisks;
}

int
VixDiskLibDouble_InitCount(void)
{
   return initCount;
}

const char *
VixDiskLibDouble_LastConnect(void)
{
   return lastConnect;
}

/* sizeof or offsetof of the structs above, so the tests can hold the wrapper's ctypes layouts against C's. */
long
VixDiskLibDouble_Layout(const char *what)
{
   if (strcmp(what, "sizeof VixDiskLibConnectParams") == 0) return (long)sizeof(VixDiskLibConnectParams);
   if (strcmp(what, "offsetof creds") == 0) return (long)offsetof(VixDiskLibConnectParams, creds);
   if (strcmp(what, "offsetof port") == 0) return (long)offsetof(VixDiskLibConnectParams, port);
   if (strcmp(what, "offsetof specType") == 0) return (long)offsetof(VixDiskLibConnectParams, specType);
   if (strcmp(what, "sizeof VixDiskLibInfo") == 0) return (long)sizeof(VixDiskLibInfo);
   if (strcmp(what, "offsetof capacity") == 0) return (long)offsetof(VixDiskLibInfo, capacity);
   if (strcmp(what, "offsetof uuid") == 0) return (long)offsetof(VixDiskLibInfo, uuid);
   if (strcmp(what, "offsetof physicalSectorSize") == 0) return (long)offsetof(VixDiskLibInfo, physicalSectorSize);
   if (strcmp(what, "offsetof blocks") == 0) return (long)offsetof(VixDiskLibBlockList, blocks);
   return -1;
}
