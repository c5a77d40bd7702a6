import{a,b}from"./chunk-OPRYPKEY.js";import"./chunk-MOXGMCXN.js";import"./chunk-2YEWKWXJ.js";import"./chunk-O2XFH626.js";export{a as Replica,b as replicaFor};
