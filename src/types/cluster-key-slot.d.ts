// cluster-key-slot (the CRC16 slot function ioredis itself uses) ships no type declarations.
declare module 'cluster-key-slot' {
  function calculateSlot(key: string | Buffer): number;
  export default calculateSlot;
}
