import{a,b,c}from"./chunk-UX54WPQU.js";import"./chunk-EKPCXM2Z.js";import"./chunk-2YEWKWXJ.js";import"./chunk-5K2JP7JI.js";export{a as Replica,c as closeReplicas,b as replicaFor};
