import{a,b,c}from"./chunk-UPWF5LBH.js";import"./chunk-N7IFJQ3U.js";import"./chunk-2YEWKWXJ.js";import"./chunk-5K2JP7JI.js";export{a as Replica,c as closeReplicas,b as replicaFor};
