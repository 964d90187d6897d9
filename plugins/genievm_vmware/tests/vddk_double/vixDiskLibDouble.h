/*
 * vixDiskLibDouble.h -- types, constants and error codes of the VDDK ABI TEST DOUBLE
 * (vixDiskLibDouble.c), with the names, values and layouts of vixDiskLib.h in VDDK 7.0 and 8.0
 * on LP64 Linux. Not VMware's header: only what the double implements.
 */

#ifndef VIXDISKLIB_DOUBLE_H
#define VIXDISKLIB_DOUBLE_H

#include <stdarg.h>
#include <stdint.h>

/* ---- types and constants, as in vixDiskLib.h ---- */

typedef uint64_t VixError;
typedef uint64_t VixDiskLibSectorType;
typedef char Bool;

#define VIX_ERROR_CODE(err) ((err) & 0xFFFF)
#define VIXDISKLIB_SECTOR_SIZE 512
#define VIXDISKLIB_MIN_CHUNK_SIZE 128
#define VIXDISKLIB_MAX_CHUNK_NUMBER (512 * 1024)
#define VIXDISKLIB_FLAG_OPEN_READ_ONLY (1 << 2)

enum {
   VIX_OK = 0,
   VIX_E_FAIL = 1,
   VIX_E_OUT_OF_MEMORY = 2,
   VIX_E_INVALID_ARG = 3,
   VIX_E_FILE_NOT_FOUND = 4,
   VIX_E_NOT_SUPPORTED = 6,
   VIX_E_FILE_ERROR = 7,
   VIX_E_DISK_FULL = 8,
   VIX_E_FILE_READ_ONLY = 11,
   VIX_E_FILE_ACCESS_ERROR = 13,
   VIX_E_AUTHENTICATION_FAIL = 35,
   VIX_E_INVALID_HANDLE = 1000,
   VIX_E_HOST_USER_PERMISSIONS = 3014,
   VIX_E_DISK_INVAL = 16000,
   VIX_E_DISK_NOINIT = 16001,
   VIX_E_DISK_OUTOFRANGE = 16007,
   VIX_E_CANNOT_CONNECT_TO_HOST = 18000,
   VIX_E_NET_HTTP_SSL_SECURITY = 30201,
};

typedef void VixDiskLibGenericLogFunc(const char *fmt, va_list args);

typedef enum {
   VIXDISKLIB_CRED_UID = 1,
   VIXDISKLIB_CRED_SESSIONID = 2,
   VIXDISKLIB_CRED_TICKETID = 3,
   VIXDISKLIB_CRED_SSPI = 4,
   VIXDISKLIB_CRED_UNKNOWN = 256
} VixDiskLibCredType;

typedef enum {
   VIXDISKLIB_SPEC_VMX = 0,
   VIXDISKLIB_SPEC_VSTORAGE_OBJECT = 1,
   VIXDISKLIB_SPEC_UNKNOWN = 2
} VixDiskLibSpecType;

typedef struct {
   char *id;
   char *datastoreMoRef;
   char *ssId;
} VixDiskLibVStorageObjectSpec;

typedef struct {
   char *vmxSpec;
   char *serverName;
   char *thumbPrint;
   long privateUse;
   VixDiskLibCredType credType;
   union {
      struct { char *userName; char *password; } uid;
      struct { char *cookie; char *userName; char *key; } sessionId;
      void *ticketId;
   } creds;
   uint32_t port;
   uint32_t nfcHostPort;
   char *vimApiVer; /* not used */
   char reserved[8];
   void *state; /* the real library's internal use */
   union { VixDiskLibVStorageObjectSpec vStorageObjSpec; } spec;
   VixDiskLibSpecType specType;
} VixDiskLibConnectParams;

typedef struct { uint32_t cylinders, heads, sectors; } VixDiskLibGeometry;

typedef enum {
   VIXDISKLIB_ADAPTER_IDE = 1,
   VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC = 2,
   VIXDISKLIB_ADAPTER_SCSI_LSILOGIC = 3,
   VIXDISKLIB_ADAPTER_UNKNOWN = 256
} VixDiskLibAdapterType;

typedef struct {
   VixDiskLibGeometry biosGeo;
   VixDiskLibGeometry physGeo;
   VixDiskLibSectorType capacity;
   VixDiskLibAdapterType adapterType;
   int numLinks;
   char *parentFileNameHint;
   char *uuid;
   uint32_t logicalSectorSize;  /* added in VDDK 7.0 */
   uint32_t physicalSectorSize; /* added in VDDK 7.0 */
} VixDiskLibInfo;

typedef struct { VixDiskLibSectorType offset, length; } VixDiskLibBlock;
typedef struct { uint32_t numBlocks; VixDiskLibBlock blocks[1]; } VixDiskLibBlockList;

#endif /* VIXDISKLIB_DOUBLE_H */
