import{a,b}from"./chunk-THOMT2DS.js";import"./chunk-56H3YKAB.js";import"./chunk-O2XFH626.js";export{a as Replica,b as replicaFor};
